"""The earpiece in the microphone: a handset's echo path made on purpose, and its cancellation.

:class:`HandsetLeak` is the echo path of ``--echo-db``: the earpiece delayed and band-limited to
what a telephone capsule passes (300-3400 Hz), at a given level, so echo handling can be tried and
tested with files. :class:`EchoCanceller` removes that echo again with WebRTC's AEC3
(``pywebrtc-audio``), the playback as reference; docs/DESIGN-NOTES.md says why this library.
"""

from __future__ import annotations

import logging

import numpy as np

_LOGGER = logging.getLogger(__name__)

LEAK_DELAY_SECONDS = 0.03
"""Earpiece-to-microphone delay of the simulated handset (sound path plus the Pi's audio buffers), in seconds."""
_BAND_HZ = (300.0, 3400.0)
"""What a telephone earpiece and capsule pass."""
_TAPS = 101
"""Length of the band-pass filter (odd: linear phase, a whole-sample group delay)."""


def _band_pass(sample_rate: int) -> np.ndarray:
    """A windowed-sinc band-pass FIR for :data:`_BAND_HZ` at ``sample_rate``."""
    n = np.arange(_TAPS) - (_TAPS - 1) / 2
    low, high = (f / sample_rate for f in _BAND_HZ)
    kernel = 2 * high * np.sinc(2 * high * n) - 2 * low * np.sinc(2 * low * n)
    return (kernel * np.hamming(_TAPS)).astype(np.float32)


class HandsetLeak:
    """The earpiece as the microphone hears it: ``level_db`` below the playback, delayed, band-limited."""

    def __init__(self, level_db: float, sample_rate: int = 16000, delay_seconds: float = LEAK_DELAY_SECONDS) -> None:
        self.gain = float(10 ** (level_db / 20))
        self.kernel = _band_pass(sample_rate)
        group_delay = (_TAPS - 1) // 2
        self.delay = max(0, round(delay_seconds * sample_rate) - group_delay)
        """Samples of pure delay before the filter (whose own group delay makes up the rest)."""

    @property
    def history(self) -> int:
        """Earpiece samples before a block that the leak of that block depends on."""
        return self.delay + _TAPS - 1

    def leak(self, earpiece: np.ndarray) -> np.ndarray:
        """The echo of the last ``len(earpiece) - history`` samples of ``earpiece`` (float32 -1..1)."""
        shifted = earpiece[: earpiece.size - self.delay] if self.delay else earpiece
        return np.convolve(shifted, self.kernel, mode="valid").astype(np.float32) * self.gain


class EchoCancellerError(RuntimeError):
    """The echo canceller cannot run (library missing)."""


class EchoCanceller:
    """WebRTC AEC3 on 16 kHz mono PCM16: the microphone with the earpiece's echo removed."""

    def __init__(self, sample_rate: int = 16000, delay_ms: int = 40) -> None:
        try:
            from pywebrtc_audio import EchoCanceller as Aec3
        except ImportError as err:
            raise EchoCancellerError("echo cancellation needs pywebrtc-audio (requirements-pi.txt)") from err
        self._aec = Aec3(sample_rate=sample_rate, num_channels=1, stream_delay_ms=delay_ms)
        self._step = sample_rate // 100  # AEC3 works on 10 ms frames and zero-pads a partial one: feed whole ones
        self._near = np.zeros(0, dtype=np.int16)
        self._far = np.zeros(0, dtype=np.int16)
        self._out = np.zeros(self._step, dtype=np.int16)  # one frame of latency, so every call can be answered

    def process(self, mic: bytes, earpiece: bytes) -> bytes:
        """``mic`` without the echo of ``earpiece`` (the same length: what played while ``mic`` was heard),
        10 ms late: the output lags the input by one AEC3 frame."""
        near = np.frombuffer(mic, dtype="<i2")
        far = np.frombuffer(earpiece, dtype="<i2")
        if far.size != near.size:
            far = np.resize(far, near.size) if far.size else np.zeros(near.size, dtype=np.int16)
        self._near = np.concatenate([self._near, near])
        self._far = np.concatenate([self._far, far])
        whole = self._near.size - self._near.size % self._step
        if whole:
            done = self._aec.process(self._near[:whole], self._far[:whole])
            self._out = np.concatenate([self._out, done.astype(np.int16)])
            self._near, self._far = self._near[whole:], self._far[whole:]
        out, self._out = self._out[: near.size], self._out[near.size :]
        return bytes(out.astype("<i2").tobytes())


class PlayedHistory:
    """What the earpiece was given, on the monotonic clock, at 16 kHz: the live echo canceller's reference."""

    def __init__(self, keep_seconds: float = 10.0, sample_rate: int = 16000) -> None:
        self._rate = sample_rate
        self._keep = keep_seconds
        self._spans: list[tuple[float, np.ndarray]] = []

    def add(self, at: float, pcm: np.ndarray) -> None:
        """``pcm`` (int16, 16 kHz) starts playing at monotonic time ``at``."""
        self._spans = [(t, x) for t, x in self._spans if t + x.size / self._rate > at - self._keep]
        self._spans.append((at, pcm))

    def cut(self, at: float) -> None:
        """Playback was killed at ``at``: nothing after it was heard."""
        kept = []
        for t, x in self._spans:
            if t < at:
                kept.append((t, x[: max(0, round((at - t) * self._rate))]))
        self._spans = kept

    def segment(self, at: float, count: int) -> bytes:
        """The ``count`` samples played from monotonic time ``at`` on (silence where nothing played)."""
        out = np.zeros(count, dtype=np.int16)
        for t, x in self._spans:
            offset = round((t - at) * self._rate)  # where this span starts inside the segment
            lo, hi = max(0, offset), min(count, offset + x.size)
            if hi > lo:
                out[lo:hi] = x[lo - offset : hi - offset]
        return bytes(out.astype("<i2").tobytes())
