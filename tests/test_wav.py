"""WAV streaming helpers: the open-ended header aplay plays, and reading streams as they arrive."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from common.wav import (
    WavFormatError,
    WavStreamReader,
    pcm16_to_float,
    read_wav_pcm16,
    resample_pcm16,
    wav_header,
    write_wav,
)
from tests.helpers import tone_pcm16


def test_an_open_ended_stream_plays_in_sox_and_reads_back_sample_exact(tmp_path: Path) -> None:
    pcm = tone_pcm16(0.5, 24000)
    path = tmp_path / "stream.wav"
    path.write_bytes(wav_header(24000) + pcm)  # the open-ended header the server streams first
    # sox (a real consumer, like aplay) accepts the unknown-length header and finds 0.5 s.
    out = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    reader = WavStreamReader()
    data = path.read_bytes()
    got = b"".join(reader.feed(data[i : i + 7]) for i in range(0, len(data), 7))  # byte dribbles
    assert reader.format is not None and reader.format.sample_rate == 24000
    assert got == pcm


def test_a_complete_file_has_true_sizes_and_round_trips(tmp_path: Path) -> None:
    pcm = tone_pcm16(0.25, 16000)
    write_wav(str(tmp_path / "a.wav"), pcm, 16000)
    data, rate = soundfile.read(tmp_path / "a.wav", dtype="int16")
    assert rate == 16000 and data.tobytes() == pcm
    again, rate = read_wav_pcm16(str(tmp_path / "a.wav"))
    assert again == pcm


def test_resampling_keeps_duration_and_pitch() -> None:
    pcm = tone_pcm16(1.0, 22050, freq=300.0)
    out = pcm16_to_float(resample_pcm16(pcm, 22050, 16000))
    assert abs(len(out) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 300.0) < 3


def test_garbage_is_refused_with_a_clear_error() -> None:
    with pytest.raises(WavFormatError, match="no WAV header"):
        WavStreamReader().feed(b"<html>" + b"x" * 5000)
    header = bytearray(wav_header(8000))
    header[34] = 8  # 8-bit samples
    with pytest.raises(WavFormatError, match="unsupported"):
        WavStreamReader().feed(bytes(header))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (wav_header(0), "sample rate 0 Hz"),
        (wav_header(96000), "sample rate 96000 Hz"),
        (wav_header(16000, channels=2), "2 channels"),
    ],
)
def test_a_header_no_player_should_get_is_refused(header: bytes, reason: str) -> None:
    # Rate 0 crashed playback and left aplay behind; stereo played as mono at half speed.
    with pytest.raises(WavFormatError, match=reason):
        WavStreamReader().feed(header + b"\0" * 100)


def test_an_extensible_header_must_carry_pcm() -> None:
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 32000, 2, 16) + struct.pack("<HHI", 22, 16, 4)
    for sub, ok in ((1, True), (3, False)):  # PCM, IEEE float
        body = fmt + struct.pack("<H", sub) + b"\0\0\0\0\x10\0\x80\0\0\xaa\0\x38\x9b\x71"
        header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", len(body)) + body
        header += b"data" + struct.pack("<I", 0xFFFFFFFF)
        reader = WavStreamReader()
        if ok:
            assert reader.feed(header + b"\1\0") == b"\1\0"
        else:
            with pytest.raises(WavFormatError, match="format 3"):
                reader.feed(header)
