"""Uploads in every accepted container decode to 16 kHz mono; bad ones are refused with the right error."""

from __future__ import annotations

import contextlib
import io
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf

from cloud_server.audio_codec import (
    AudioError,
    AudioTooLong,
    BadAudio,
    BadSampleRate,
    UnsupportedAudio,
    change_speed,
    decode_audio,
    encode_audio,
)
from common.wav import float_to_pcm16, wav_header
from tests.helpers import tone

LIMITS = {"max_bytes": 5_000_000, "max_seconds": 10.0}


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def dominant_freq(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("WAV", "PCM_16", 44100, 2),
        ("WAV", "FLOAT", 8000, 1),
        ("FLAC", "PCM_24", 48000, 1),
        ("OGG", "VORBIS", 22050, 2),
        ("OGG", "OPUS", 48000, 1),
        ("MP3", "MPEG_LAYER_III", 44100, 1),
    ],
)
def test_each_container_decodes_to_16k_mono(fmt: str, subtype: str, rate: int, channels: int) -> None:
    data = encode(tone(2.0, rate, channels=channels), rate, fmt, subtype)
    out = decode_audio(data, **LIMITS)
    assert out.sample_rate == 16000 and out.samples.ndim == 1 and out.samples.dtype == np.float32
    assert out.source_format == fmt and out.source_rate == rate
    assert out.duration == pytest.approx(2.0, abs=0.08)  # MP3/Opus pad a little
    assert dominant_freq(out.samples, 16000) == pytest.approx(440.0, abs=5.0)


def test_source_rate_kept_when_asked() -> None:
    data = encode(tone(1.0, 22050), 22050, "FLAC", "PCM_16")
    out = decode_audio(data, target_rate=None, **LIMITS)
    assert out.sample_rate == 22050 and out.samples.size == 22050


@pytest.mark.parametrize("data", [b"hello, this is not audio at all", b"\x00" * 1000, b"%PDF-1.4\n" + b"x" * 200])
def test_garbage_is_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedAudio) as info:
        decode_audio(data, **LIMITS)
    assert info.value.status == 415


def test_other_containers_are_unsupported() -> None:
    aiff = encode(tone(0.5, 16000), 16000, "AIFF", "PCM_16")
    with pytest.raises(UnsupportedAudio):
        decode_audio(aiff, **LIMITS)


@pytest.mark.parametrize("cut", [20, 44, 200])
def test_truncated_flac_is_bad(cut: int) -> None:
    data = encode(tone(1.0, 16000), 16000, "FLAC", "PCM_16")
    with pytest.raises(BadAudio) as info:
        decode_audio(data[:cut], **LIMITS)
    assert info.value.status == 400


def test_empty_and_silent_headers_are_bad() -> None:
    with pytest.raises(BadAudio):
        decode_audio(b"", **LIMITS)
    with pytest.raises(BadAudio, match="no samples"):
        decode_audio(wav_header(16000, data_bytes=0), **LIMITS)
    with pytest.raises(BadAudio):
        decode_audio(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", **LIMITS)


def test_byte_limit_checked_first() -> None:
    data = encode(tone(1.0, 16000), 16000, "WAV", "PCM_16")
    with pytest.raises(AudioTooLong) as info:
        decode_audio(data, max_bytes=len(data) - 1, max_seconds=60)
    assert info.value.status == 413 and "bytes" in str(info.value)


def test_duration_limit_from_header() -> None:
    data = encode(tone(3.0, 16000), 16000, "FLAC", "PCM_16")
    with pytest.raises(AudioTooLong, match="3.0 s"):
        decode_audio(data, max_bytes=10**7, max_seconds=2.0)


def test_streamed_wav_with_unknown_length_is_bounded() -> None:
    # An open-ended header ("size unknown") over 3 s of PCM: the decoder must stop at the limit.
    data = wav_header(16000) + float_to_pcm16(tone(3.0, 16000))
    with pytest.raises(AudioTooLong):
        decode_audio(data, max_bytes=10**7, max_seconds=2.0)
    ok = decode_audio(data, max_bytes=10**7, max_seconds=5.0)
    assert ok.duration == pytest.approx(3.0, abs=0.01)


def test_minimum_length() -> None:
    data = encode(tone(1.0, 16000), 16000, "WAV", "PCM_16")
    with pytest.raises(BadAudio, match="at least 5"):
        decode_audio(data, min_seconds=5.0, **LIMITS)


def peak_memory(call: Callable[[], object]) -> int:
    """Bytes allocated at the peak of ``call`` (numpy arrays are traced too)."""
    tracemalloc.start()
    with contextlib.suppress(AudioError):
        call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize(("rate", "fmt"), [(655350, "FLAC"), (1, "WAV"), (4000, "WAV"), (384000, "WAV")])
def test_absurd_sample_rates_are_refused_before_decoding(rate: int, fmt: str) -> None:
    # The review's upload: a small FLAC at 655 kHz that decoded to a 77 MB clip.
    data = encode(np.zeros(max(rate, 16) * 8, np.float32), rate, fmt, "PCM_16")
    with pytest.raises(BadSampleRate) as info:
        decode_audio(data, max_bytes=10**8, max_seconds=60.0)
    assert info.value.status == 400 and "kHz" in str(info.value)
    assert peak_memory(lambda: decode_audio(data, max_bytes=10**8, max_seconds=60.0)) < 1_000_000


def test_too_many_channels_are_refused() -> None:
    data = encode(tone(0.5, 16000, channels=9), 16000, "WAV", "PCM_16")
    with pytest.raises(BadSampleRate, match="9 channels"):
        decode_audio(data, **LIMITS)


def test_a_high_rate_upload_is_resampled_block_by_block() -> None:
    data = encode(tone(10.0, 192000), 192000, "WAV", "PCM_16")
    out = decode_audio(data, max_bytes=10**8, max_seconds=60.0, target_rate=24000)
    assert out.sample_rate == 24000 and out.duration == pytest.approx(10.0, abs=0.01)
    assert dominant_freq(out.samples, 24000) == pytest.approx(440.0, abs=2.0)
    # 10 s at 192 kHz is 7.7 MB of float32; the decode never holds it at that rate.
    used = peak_memory(lambda: decode_audio(data, max_bytes=10**8, max_seconds=60.0, target_rate=24000))
    assert used < 4_000_000


@pytest.mark.parametrize("scale", [1e30, -3e38, 7.5])
def test_float_audio_louder_than_full_scale_is_scaled_into_range(scale: float) -> None:
    data = encode(tone(1.0, 16000) * np.float32(scale), 16000, "WAV", "FLOAT")
    out = decode_audio(data, **LIMITS)
    assert float(np.abs(out.samples).max()) == pytest.approx(1.0, abs=0.01)
    assert dominant_freq(out.samples, 16000) == pytest.approx(440.0, abs=5.0)
    resampled = decode_audio(data, target_rate=24000, **LIMITS)
    assert float(np.abs(resampled.samples).max()) <= 1.0
    assert dominant_freq(resampled.samples, 24000) == pytest.approx(440.0, abs=5.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_infinite_samples_are_refused(bad: float) -> None:
    samples = tone(1.0, 16000)
    samples[100] = bad
    with pytest.raises(BadAudio, match="invalid samples"):
        decode_audio(encode(samples, 16000, "WAV", "FLOAT"), **LIMITS)


@pytest.mark.parametrize(
    ("response_format", "expected_rate"),
    [("wav", 24000), ("pcm", 24000), ("flac", 24000), ("mp3", 24000), ("opus", 24000)],
)
def test_encoded_reply_decodes_back(response_format: str, expected_rate: int) -> None:
    pcm = float_to_pcm16(tone(1.5, 24000, freq=300.0))
    data, rate = encode_audio(pcm, 24000, response_format)
    assert rate == expected_rate
    if response_format == "pcm":
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768
        back_rate = 24000
    else:
        samples, back_rate = sf.read(io.BytesIO(data), dtype="float32")
    assert back_rate == expected_rate
    assert samples.size / back_rate == pytest.approx(1.5, abs=0.08)
    assert dominant_freq(samples, back_rate) == pytest.approx(300.0, abs=5.0)


def test_piper_rate_is_resampled_for_opus() -> None:
    pcm = float_to_pcm16(tone(1.0, 22050))
    data, rate = encode_audio(pcm, 22050, "opus")
    assert rate == 24000 and sf.info(io.BytesIO(data)).samplerate == 24000


def test_speed_changes_tempo_not_pitch() -> None:
    samples = tone(2.0, 24000, freq=300.0)
    fast = change_speed(samples, 24000, 2.0)
    slow = change_speed(samples, 24000, 0.5)
    assert fast.size / 24000 == pytest.approx(1.0, abs=0.05)
    assert slow.size / 24000 == pytest.approx(4.0, abs=0.1)
    assert dominant_freq(fast, 24000) == pytest.approx(300.0, abs=10.0)
    assert dominant_freq(slow, 24000) == pytest.approx(300.0, abs=10.0)
    assert change_speed(samples, 24000, 1.0) is samples
