"""Touch-tone (DTMF) digits heard in the handset audio, with ITU-T Q.24 tolerances.

Each 20 ms window (5 ms hop) is measured at the eight DTMF frequencies (the single-bin DFT
Goertzel computes, done for many windows as one matrix product). A window holds a digit when
one row and one column tone stand out, their levels are within the twist limits, and together
they carry nearly all the window's energy (speech and its harmonics spread energy elsewhere).
A run of such windows long enough for a 40 ms tone is a digit, once: the two frequencies are
then measured finely over the run and rejected if more than 2.5 % off (Q.24: accept within
1.5 %, reject beyond 3.5 %). The digit may repeat only after a pause.
"""

from __future__ import annotations

import math

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")

WINDOW_SECONDS = 0.020
HOP_SECONDS = 0.005
MIN_TONE_RUN = 6
"""Windows in a row that make a digit: a 40 ms tone gives 7, a 20 ms tone at most 3 (partial windows count)."""
MIN_PAUSE_RUN = 5
"""Windows in a row without the digit that end it: a 40 ms pause gives about 9, an 8 ms break 3."""
MIN_LEVEL_DBFS = -36.0
"""Quietest accepted tone component, in dB below full scale."""
MAX_HIGH_BELOW_LOW_DB = 8.0
"""Normal twist: the column (high) tone may be this much weaker than the row tone."""
MAX_HIGH_ABOVE_LOW_DB = 4.0
"""Reverse twist: the column tone may be this much stronger than the row tone."""
MIN_PEAK_OVER_NEIGHBOURS_DB = 6.0
"""Each tone must beat the other frequencies of its group by this much."""
MIN_TONE_SHARE = 0.7
"""The two tones must carry this share of the window's power (speech, noise and harmonics do not)."""
MAX_DEVIATION = 0.025
"""Largest accepted frequency error, measured over the whole tone (Q.24: accept 1.5 %, reject 3.5 %)."""


class DtmfDecoder:
    """Feed PCM16 mono chunks; get each key pressed ("0"-"9", "*", "#", "A"-"D") once per tone burst."""

    def __init__(self, sample_rate: int = 16000) -> None:
        self._rate = sample_rate
        self._window = round(WINDOW_SECONDS * sample_rate)
        self._hop = round(HOP_SECONDS * sample_rate)
        hann = np.hanning(self._window)
        self._gain = hann.sum() / 2  # |DFT| of a unit sine at its bin, through the window
        self._power_norm = (hann**2).sum()
        n = np.arange(self._window)
        freqs = np.array(ROWS + COLUMNS)
        self._basis = hann[:, None] * np.exp(-2j * math.pi * freqs[None, :] * n[:, None] / sample_rate)
        self._hann = hann
        self._samples = np.zeros(0)
        self._base = 0  # absolute index of self._samples[0]
        self._next = 0  # absolute index where the next window starts
        self._candidate: str | None = None
        self._run = 0
        self._run_start = 0
        self._active: str | None = None  # the key of the burst in progress (reported or rejected)
        self._missing = 0

    @property
    def tone_sounding(self) -> bool:
        """A key's tone is being heard now (a burst reported, or one long enough to become a key)."""
        return self._active is not None or self._candidate is not None

    def hold(self, key: str) -> None:
        """``key`` was already taken (heard by another decoder): its tone, if still sounding, is not a new press."""
        self._active, self._missing, self._candidate = key, 0, None

    def feed(self, pcm: bytes) -> list[str]:
        """Keys whose tone became long enough within this chunk."""
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
        self._samples = np.concatenate((self._samples, x))
        start = self._next - self._base
        count = (self._samples.size - start - self._window) // self._hop + 1
        keys: list[str] = []
        if count > 0:
            frames = np.lib.stride_tricks.sliding_window_view(self._samples[start:], self._window)[:: self._hop][:count]
            for i, key in enumerate(self._classify(frames)):
                reported = self._step(key, self._next + i * self._hop)
                if reported is not None:
                    keys.append(reported)
            self._next += count * self._hop
        keep_from = min(self._next, self._run_start if self._candidate else self._next) - self._base
        self._samples = self._samples[max(0, keep_from) :]
        self._base += max(0, keep_from)
        return keys

    def _classify(self, frames: np.ndarray) -> list[str | None]:
        """The key each window holds, or None."""
        amps = np.abs(frames @ self._basis) / self._gain
        rows, cols = amps[:, :4], amps[:, 4:]
        r, c = rows.argmax(axis=1), cols.argmax(axis=1)
        idx = np.arange(frames.shape[0])
        row_amp, col_amp = rows[idx, r], cols[idx, c]
        floor = 10 ** (MIN_LEVEL_DBFS / 20)
        twist_db = 20 * np.log10(np.maximum(col_amp, 1e-12) / np.maximum(row_amp, 1e-12))
        row_rest = np.sort(rows, axis=1)[:, -2]
        col_rest = np.sort(cols, axis=1)[:, -2]
        peak = 10 ** (MIN_PEAK_OVER_NEIGHBOURS_DB / 20)
        total_power = ((frames * self._hann) ** 2).sum(axis=1) / self._power_norm
        tone_power = (row_amp**2 + col_amp**2) / 2
        ok = (
            (row_amp >= floor)
            & (col_amp >= floor)
            & (twist_db >= -MAX_HIGH_BELOW_LOW_DB)
            & (twist_db <= MAX_HIGH_ABOVE_LOW_DB)
            & (row_amp >= peak * row_rest)
            & (col_amp >= peak * col_rest)
            & (tone_power >= MIN_TONE_SHARE * np.maximum(total_power, 1e-20))
        )
        return [KEYS[r[i]][c[i]] if ok[i] else None for i in range(frames.shape[0])]

    def _step(self, key: str | None, at: int) -> str | None:
        """One window's verdict; returns a key the moment its burst is long enough and in tune."""
        if self._active is not None:
            if key == self._active:
                self._missing = 0
                return None
            self._missing += 1
            if self._missing < MIN_PAUSE_RUN:
                return None
            self._active = None  # the pause is long enough: the burst has ended
        if key is None or key != self._candidate:
            self._candidate, self._run, self._run_start = key, (1 if key else 0), at
            return None
        self._run += 1
        if self._run < MIN_TONE_RUN:
            return None
        self._active, self._missing, self._candidate = key, 0, None
        return key if self._in_tune(key, self._run_start, at + self._window) else None

    def _in_tune(self, key: str, start: int, end: int) -> bool:
        """Both tones within MAX_DEVIATION of nominal, measured finely over the whole run."""
        x = self._samples[start - self._base : end - self._base]
        x = x * np.hanning(x.size)
        n = np.arange(x.size)
        row = next(i for i, keys in enumerate(KEYS) if key in keys)
        for nominal in (ROWS[row], COLUMNS[KEYS[row].index(key)]):
            offsets = np.linspace(-0.05, 0.05, 201)  # 0.05 % steps over +-5 %
            probe = np.exp(-2j * math.pi * np.outer(nominal * (1 + offsets), n) / self._rate)
            best = offsets[int(np.abs(probe @ x).argmax())]
            if abs(best) > MAX_DEVIATION:
                return False
        return True
