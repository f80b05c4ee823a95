"""Hearing tones in PCM: spectral peaks and DTMF key presses, shared by the tone, DTMF and call tests."""

from __future__ import annotations

import math

import numpy as np

from pi_client.telephone.dtmf import COLUMNS, KEYS, ROWS
from tests.fixtures_pi import PI_RATE, silence

DTMF_LEVEL = 10 ** (-10 / 20)
"""Each DTMF component at -10 dBFS, like a keypad's tones on the handset line."""


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def peaks(x: np.ndarray, count: int, rate: int = PI_RATE) -> list[float]:
    """The ``count`` strongest spectral peaks of ``x``, in Hz (Hann window, zero-padded to 0.25 Hz bins)."""
    n = 4 * rate
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), n))
    local_max = (spectrum[1:-1] > spectrum[:-2]) & (spectrum[1:-1] >= spectrum[2:])
    candidates = np.flatnonzero(local_max) + 1
    strongest = candidates[np.argsort(spectrum[candidates])[-count:]]
    return sorted(float(i) * rate / n for i in strongest)


def peaks_between(pcm: bytes, rate: int, start: float, end: float, count: int) -> list[float]:
    """The ``count`` strongest frequencies of PCM16 ``pcm`` between ``start`` and ``end`` seconds
    (negative: counted from its end, as a file that ends with a tone is checked)."""
    x = samples(pcm)
    return peaks(x[round(start * rate) : round(end * rate)], count, rate)


def dtmf_tone(key: str, seconds: float, row_dev: float = 0.0, col_dev: float = 0.0, twist_db: float = 0.0) -> bytes:
    """The DTMF pair for ``key``: deviations as fractions, twist as the column's level over the row's in dB."""
    row = next(i for i, keys in enumerate(KEYS) if key in keys)
    f_low, f_high = ROWS[row] * (1 + row_dev), COLUMNS[KEYS[row].index(key)] * (1 + col_dev)
    t = np.arange(round(seconds * PI_RATE)) / PI_RATE
    level = DTMF_LEVEL
    x = level * np.sin(2 * math.pi * f_low * t) + level * 10 ** (twist_db / 20) * np.sin(2 * math.pi * f_high * t)
    return (x * 32767).astype("<i2").tobytes()


def keypad(keys: str, on: float = 0.07, off: float = 0.07) -> bytes:
    """Keys pressed one after another: each tone ``on`` seconds, then ``off`` seconds of silence."""
    return b"".join(dtmf_tone(k, on) + silence(off) for k in keys)
