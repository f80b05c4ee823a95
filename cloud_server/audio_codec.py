"""Audio in and out of the server: decode uploads (WAV, FLAC, OGG, MP3), encode replies for the OpenAI route.

Decoding goes through libsndfile (``soundfile``), which reads all four containers. Limits are
checked before the full decode: the byte count first, then the sample rate, channel count and
duration the header declares, and the decode itself reads at most one block past the limit, so a
header that lies (or says "unknown", as streamed WAV and FLAC do) cannot make the server decode an
hour of audio. Blocks are resampled to the target rate as they are read (soxr keeps its state
across blocks), so memory follows the output rate, not whatever rate the upload claims. The
result is always in [-1, 1]: float files may hold any finite value, and Whisper slows down by
orders of magnitude on samples like 1e30, so louder audio is scaled down to full scale.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Final

import numpy as np

from common.wav import pcm16_to_float, resample_float, wav_header

_LOGGER = logging.getLogger(__name__)

STT_RATE: Final = 16000
OPENAI_PCM_RATE: Final = 24000
"""OpenAI's ``pcm`` format: raw 24 kHz 16-bit little-endian mono."""
_READ_BLOCK: Final = 65536
MIN_SAMPLE_RATE: Final = 8000
"""Lowest accepted upload rate, in Hz (telephone audio); below it there is no speech to hear."""
MAX_SAMPLE_RATE: Final = 192000
"""Highest accepted upload rate, in Hz (studio audio); a higher claim only makes the decode expensive."""
MAX_CHANNELS: Final = 8
"""Most channels accepted in an upload (7.1); each read block holds every channel."""

ACCEPTED_FORMATS: Final = ("WAV", "FLAC", "OGG", "MP3")
RESPONSE_FORMATS: Final = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SUPPORTED_RESPONSE_FORMATS: Final = ("mp3", "opus", "flac", "wav", "pcm")
CONTENT_TYPES: Final = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# (libsndfile container, subtype) per OpenAI response_format.
_SOUNDFILE_FORMATS: Final = {
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
    "flac": ("FLAC", "PCM_16"),
}
_OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)


class AudioError(ValueError):
    """An upload the server will not accept; ``status`` is the HTTP status it maps to."""

    status = 400
    code = "bad_audio"


class BadAudio(AudioError):
    """Claims to be audio of a supported kind but cannot be decoded (truncated, corrupt, empty)."""


class UnsupportedAudio(AudioError):
    """Not WAV, FLAC, OGG or MP3."""

    status = 415
    code = "unsupported_audio"


class BadSampleRate(AudioError):
    """A sample rate or channel count outside what speech uploads use."""

    code = "bad_sample_rate"


class AudioTooLong(AudioError):
    """Over the configured byte or duration limit."""

    status = 413
    code = "audio_too_large"


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples plus where they came from."""

    samples: np.ndarray
    sample_rate: int
    source_format: str
    source_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.size / self.sample_rate if self.sample_rate else 0.0


def sniff_format(data: bytes) -> str | None:
    """The container named by the first bytes (WAV, FLAC, OGG, MP3), or None for anything else."""
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == b"fLaC":
        return "FLAC"
    if data[:4] == b"OggS":
        return "OGG"
    if data[:3] == b"ID3":
        return "MP3"
    # An MPEG audio frame sync: 11 set bits, layer bits not "reserved".
    if len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and (data[1] & 0x06) != 0:
        return "MP3"
    return None


def decode_audio(
    data: bytes,
    *,
    max_bytes: int,
    max_seconds: float,
    target_rate: int | None = STT_RATE,
    min_seconds: float = 0.0,
) -> DecodedAudio:
    """Decode an upload to mono float32 in [-1, 1] (resampled to ``target_rate``; None keeps the source rate)."""
    if len(data) > max_bytes:
        raise AudioTooLong(f"audio is {len(data)} bytes; the limit is {max_bytes} bytes")
    if not data:
        raise BadAudio("the audio upload is empty")
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedAudio("unsupported audio: send WAV, FLAC, OGG (Vorbis/Opus) or MP3")
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as fh:
            if fh.format not in ACCEPTED_FORMATS:
                raise UnsupportedAudio(f"unsupported audio container {fh.format}: send WAV, FLAC, OGG or MP3")
            rate = int(fh.samplerate)
            _check_shape(rate, int(fh.channels))
            limit_frames = int(max_seconds * rate)
            declared = fh.frames
            # libsndfile reports a huge count when the header says "unknown" (streamed WAV/FLAC).
            if 0 < declared < 2**62 and declared > limit_frames:
                raise AudioTooLong(f"audio is {declared / rate:.1f} s long; the limit is {max_seconds:g} s")
            out_rate = target_rate or rate
            samples, frames = _read_bounded(fh, limit_frames, out_rate)
    except AudioError:
        raise
    except (RuntimeError, ValueError, TypeError) as err:  # sf.LibsndfileError is a RuntimeError
        raise BadAudio(f"could not decode the {kind} audio: {err}") from err
    if frames == 0 or samples.size == 0:
        raise BadAudio(f"the {kind} audio has no samples")
    duration = frames / rate
    if duration < min_seconds:
        raise BadAudio(f"audio is {duration:.1f} s long; at least {min_seconds:g} s is needed")
    out = _full_scale(samples, kind)
    _LOGGER.debug("decoded %s: %.2f s at %d Hz -> %d Hz", kind, duration, rate, out_rate)
    return DecodedAudio(samples=out, sample_rate=out_rate, source_format=kind, source_rate=rate)


def _check_shape(rate: int, channels: int) -> None:
    """Refuse rates and channel counts no speech recording has, before any sample is decoded."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadSampleRate(
            f"audio at {rate} Hz: send {MIN_SAMPLE_RATE // 1000}-{MAX_SAMPLE_RATE // 1000} kHz"
            " (16 or 48 kHz is typical)"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadSampleRate(f"audio with {channels} channels: send mono or stereo")


def _read_bounded(fh: object, limit_frames: int, out_rate: int) -> tuple[np.ndarray, int]:
    """Mono float32 at ``out_rate`` and the source frame count; refused as soon as more than ``limit_frames`` arrive.

    Each block is checked for NaN/inf and resampled on the way, so a long upload at a high rate
    never sits in memory at its own rate.
    """
    rate = int(fh.samplerate)  # type: ignore[attr-defined]
    resampler = None
    if out_rate != rate:
        import soxr

        resampler = soxr.ResampleStream(rate, out_rate, 1, dtype="float32")
    blocks: list[np.ndarray] = []
    total = 0
    while True:
        block = fh.read(_READ_BLOCK, dtype="float32", always_2d=True)  # type: ignore[attr-defined]
        last = block.shape[0] == 0
        total += block.shape[0]
        if total > limit_frames:
            raise AudioTooLong(f"audio is longer than the limit of {limit_frames / rate:g} s")
        if not np.all(np.isfinite(block)):
            raise BadAudio("the audio contains invalid samples (NaN or infinity)")
        mono = block.mean(axis=1, dtype=np.float64) if block.shape[1] > 1 else block[:, 0]
        mono = mono.astype(np.float32, copy=False)
        if resampler is not None:
            mono = resampler.resample_chunk(_within_float32(mono), last=last)
        if mono.size:
            blocks.append(mono)
        if last:
            break
    samples = np.concatenate(blocks).astype(np.float32, copy=False) if blocks else np.zeros(0, np.float32)
    return samples, total


def _within_float32(samples: np.ndarray) -> np.ndarray:
    """Samples the resampler's filter cannot overflow (it sums many of them); speech is far inside this."""
    return np.clip(samples, -1e35, 1e35)


def _full_scale(samples: np.ndarray, kind: str) -> np.ndarray:
    """Scale audio louder than full scale down to peak 1.0 (float files have no ceiling)."""
    peak = float(np.max(np.abs(samples)))
    if not np.isfinite(peak):
        raise BadAudio(f"the {kind} audio contains invalid samples")
    if peak > 1.0:
        _LOGGER.info("Audio peaks at %.3g: scaled down to full scale", peak)
        samples = samples / np.float32(peak)
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- encoding


def change_speed(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """Play ``speed`` times faster, keeping the pitch (librosa phase vocoder); 1.0 is a no-op.

    librosa comes with Chatterbox on the server. Where it is missing the speed change falls back
    to resampling, which shifts the pitch with the tempo, and says so in the log.
    """
    if speed == 1.0 or samples.size == 0:
        return samples
    import importlib.util

    if importlib.util.find_spec("librosa") is not None:
        import librosa

        stretched = librosa.effects.time_stretch(samples.astype(np.float32), rate=speed)
        return np.asarray(stretched, dtype=np.float32)
    _LOGGER.warning("librosa is not installed: speed %.2f by resampling (pitch changes too)", speed)
    return resample_float(samples, int(round(sample_rate * speed)), sample_rate)


def encode_audio(pcm: bytes, sample_rate: int, response_format: str) -> tuple[bytes, int]:
    """Encode mono PCM16 as a whole file in ``response_format``; returns (bytes, output rate)."""
    if response_format == "pcm":
        from common.wav import resample_pcm16

        return resample_pcm16(pcm, sample_rate, OPENAI_PCM_RATE), OPENAI_PCM_RATE
    if response_format == "wav":
        return wav_header(sample_rate, data_bytes=len(pcm)) + pcm, sample_rate
    if response_format not in _SOUNDFILE_FORMATS:
        raise ValueError(f"unsupported response_format {response_format!r}")
    import soundfile as sf

    container, subtype = _SOUNDFILE_FORMATS[response_format]
    samples = pcm16_to_float(pcm)
    rate = sample_rate
    if response_format == "opus" and rate not in _OPUS_RATES:
        samples, rate = resample_float(samples, rate, OPENAI_PCM_RATE), OPENAI_PCM_RATE
    if response_format == "mp3" and rate not in (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000):
        samples, rate = resample_float(samples, rate, OPENAI_PCM_RATE), OPENAI_PCM_RATE
    if samples.size == 0:
        samples = np.zeros(rate // 100, dtype=np.float32)  # encoders refuse an empty file
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=container, subtype=subtype)
    return buf.getvalue(), rate

