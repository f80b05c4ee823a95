"""WAV streaming helpers both sides share: an open-ended header, PCM conversion, resampling.

A streamed reply is one WAV header whose size fields say "unknown" (0xFFFFFFFF), followed by
16-bit little-endian mono PCM. ``aplay`` plays such a stream from stdin until EOF.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

UNKNOWN_SIZE = 0xFFFFFFFF
HEADER_BYTES = 44
SAMPLE_WIDTH = 2
MIN_SAMPLE_RATE = 8000
"""Lowest rate a stream may declare, in Hz (telephone band; a header saying 0 is garbage, not audio)."""
MAX_SAMPLE_RATE = 48000
"""Highest rate a stream may declare, in Hz (what the voices and the Pi's player use at most)."""
_PCM = 1
"""WAVE_FORMAT_PCM, also the sub-format an extensible (0xFFFE) header must name."""


class WavFormatError(ValueError):
    """The bytes are not a PCM WAV stream this project can read."""


@dataclass(frozen=True)
class WavFormat:
    sample_rate: int
    channels: int = 1
    bits: int = 16


def wav_header(sample_rate: int, channels: int = 1, data_bytes: int | None = None) -> bytes:
    """A 44-byte PCM16 WAV header; ``data_bytes=None`` marks an open-ended stream."""
    block_align = channels * SAMPLE_WIDTH
    data_size = UNKNOWN_SIZE if data_bytes is None else data_bytes
    riff_size = UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (any shape, flattened) to little-endian int16 bytes, clipped."""
    flat = np.asarray(samples, dtype=np.float32).reshape(-1)
    # The inverse of pcm16_to_float: int16 → float → int16 is exact.
    return np.clip(np.rint(flat * 32768.0), -32768, 32767).astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    """Little-endian int16 bytes to float32 samples in [-1, 1]."""
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32) / 32768.0


def resample_pcm16(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample mono PCM16 bytes (soxr, high quality); a no-op when the rates match."""
    if src_rate == dst_rate or not pcm:
        return pcm
    import soxr

    out = soxr.resample(pcm16_to_float(pcm), src_rate, dst_rate)
    return float_to_pcm16(out)


def resample_float(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono float32 samples; a no-op when the rates match."""
    if src_rate == dst_rate or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    import soxr

    return np.asarray(soxr.resample(samples.astype(np.float32), src_rate, dst_rate), dtype=np.float32)


def parse_header(header: bytes) -> WavFormat:
    """Read the format from the first bytes of a WAV stream (PCM16 mono, 8-48 kHz only)."""
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise WavFormatError("not a WAV stream (no RIFF/WAVE header)")
    pos = 12
    fmt: WavFormat | None = None
    while pos + 8 <= len(header):
        chunk_id = header[pos : pos + 4]
        (size,) = struct.unpack("<I", header[pos + 4 : pos + 8])
        body = header[pos + 8 : pos + 8 + min(size, 64)]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise WavFormatError("truncated fmt chunk")
            fmt = _check_format(body)
        if chunk_id == b"data":
            if fmt is None:
                raise WavFormatError("data chunk before fmt chunk")
            return fmt
        pos += 8 + size + (size & 1)
    raise WavFormatError("no data chunk in the header")


def _check_format(body: bytes) -> WavFormat:
    """The fmt chunk's format, refused unless it is one this project streams.

    Everything downstream (players, resampling, the reply's length in seconds) assumes PCM16 mono
    at a real rate: a header saying rate 0 crashed playback, and a stereo one played as mono.
    """
    audio_format, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if audio_format == 0xFFFE and len(body) >= 26:
        (audio_format,) = struct.unpack("<H", body[24:26])  # the sub-format GUID's first two bytes
    if audio_format != _PCM or bits != 16:
        raise WavFormatError(f"unsupported WAV encoding (format {audio_format}, {bits} bits)")
    if channels != 1:
        raise WavFormatError(f"unsupported WAV layout ({channels} channels, expected mono)")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise WavFormatError(f"unsupported WAV sample rate {rate} Hz ({MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
    return WavFormat(sample_rate=rate, channels=channels, bits=bits)


def data_offset(header: bytes) -> int:
    """Byte offset of the first PCM sample after the header (after the data chunk id/size)."""
    pos = 12
    while pos + 8 <= len(header):
        chunk_id = header[pos : pos + 4]
        (size,) = struct.unpack("<I", header[pos + 4 : pos + 8])
        if chunk_id == b"data":
            return pos + 8
        pos += 8 + size + (size & 1)
    raise WavFormatError("no data chunk in the header")


class WavStreamReader:
    """Splits an incoming WAV byte stream into its format and PCM chunks, as bytes arrive."""

    def __init__(self) -> None:
        self._buffer = b""
        self.format: WavFormat | None = None

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes of the stream; return the PCM in them (b"" until the header is whole)."""
        if self.format is not None:
            return data
        self._buffer += data
        try:
            offset = data_offset(self._buffer)
        except WavFormatError:
            if len(self._buffer) > 4096:
                raise WavFormatError("no WAV header in the first 4 KiB of the stream") from None
            return b""
        self.format = parse_header(self._buffer[:offset])
        pcm, self._buffer = self._buffer[offset:], b""
        return pcm


def write_wav(target: str | BinaryIO, pcm: bytes, sample_rate: int) -> None:
    """Write mono PCM16 as a complete WAV file (correct sizes)."""
    data = wav_header(sample_rate, data_bytes=len(pcm)) + pcm
    if isinstance(target, str):
        with open(target, "wb") as fh:
            fh.write(data)
    else:
        target.write(data)


def read_wav_pcm16(source: str | bytes, target_rate: int | None = None) -> tuple[bytes, int]:
    """Read a WAV (any format soundfile reads) as mono PCM16, optionally resampled."""
    import soundfile

    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if target_rate is not None and target_rate != rate:
        mono = resample_float(mono, rate, target_rate)
        rate = target_rate
    return float_to_pcm16(mono), int(rate)
