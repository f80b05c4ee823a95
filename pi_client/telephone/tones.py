"""Call-progress tones made on the phone: tone plans as data, rendered to PCM16 on demand.

A tone is a cadence of segments (frequencies for a time, or silence), played once or looped.
:class:`ToneGenerator` computes every sample from its absolute position, so a looped cadence is
seamless whatever the chunk sizes, and it ramps in and out over a few milliseconds wherever
the sound starts, stops or changes frequency, so there are no clicks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

ToneName = Literal["dial", "ringback", "busy", "reorder", "off_hook", "sit"]
RAMP_SECONDS = 0.004
"""Raised-cosine fade at every start, stop and frequency change, in seconds."""


@dataclass(frozen=True)
class Segment:
    """``freqs`` (Hz) sounding together for ``seconds``; no frequencies is silence."""

    freqs: tuple[float, ...]
    seconds: float


@dataclass(frozen=True)
class Tone:
    segments: tuple[Segment, ...]
    repeat: bool = True
    """Loop the cadence until stopped; False plays it once."""

    @property
    def cycle_seconds(self) -> float:
        return sum(s.seconds for s in self.segments)


def _on_off(freqs: tuple[float, ...], on: float, off: float) -> Tone:
    return Tone((Segment(freqs, on), Segment((), off)))


def _steady(freqs: tuple[float, ...]) -> Tone:
    return Tone((Segment(freqs, 1.0),))


_HOWLER = (1400.0, 2060.0, 2450.0, 2600.0)
"""The off-hook warning ("receiver off hook" howler); Europe has no common one, so both plans use it."""

PLANS: dict[str, dict[ToneName, Tone]] = {
    # North American precise tone plan (and Bellcore SIT, ~330 ms per tone, played once).
    "north_american": {
        "dial": _steady((350.0, 440.0)),
        "ringback": _on_off((440.0, 480.0), 2.0, 4.0),
        "busy": _on_off((480.0, 620.0), 0.5, 0.5),
        "reorder": _on_off((480.0, 620.0), 0.25, 0.25),
        "off_hook": _on_off(_HOWLER, 0.1, 0.1),
        "sit": Tone(tuple(Segment((f,), 0.33) for f in (913.8, 1370.6, 1776.7)), repeat=False),
    },
    # CEPT / ETSI ES 201 970: 425 Hz; SIT per ITU-T E.180 (950/1400/1800 Hz, short gaps).
    "european": {
        "dial": _steady((425.0,)),
        "ringback": _on_off((425.0,), 1.0, 4.0),
        "busy": _on_off((425.0,), 0.5, 0.5),
        "reorder": _on_off((425.0,), 0.25, 0.25),
        "off_hook": _on_off(_HOWLER, 0.1, 0.1),
        "sit": Tone(
            (
                Segment((950.0,), 0.33),
                Segment((), 0.03),
                Segment((1400.0,), 0.33),
                Segment((), 0.03),
                Segment((1800.0,), 0.33),
            ),
            repeat=False,
        ),
    },
}


class ToneGenerator:
    """One tone as a stream of PCM16 mono chunks at ``sample_rate``."""

    def __init__(self, tone: Tone, sample_rate: int, level_dbfs: float = -18.0) -> None:
        self._tone = tone
        self._rate = sample_rate
        self._amplitude = 32767 * 10 ** (level_dbfs / 20)
        self._ramp = max(1, round(RAMP_SECONDS * sample_rate))
        bounds = np.cumsum([round(s.seconds * sample_rate) for s in tone.segments])
        self._ends = bounds
        self._starts = np.concatenate(([0], bounds[:-1]))
        self._cycle = int(bounds[-1])
        self._position = 0
        self._stop_at: int | None = None if tone.repeat else self._cycle

    @property
    def finished(self) -> bool:
        """A tone played once has ended, or a stopped tone has faded out."""
        return self._stop_at is not None and self._position >= self._stop_at

    def read(self, n_samples: int) -> bytes:
        """The next ``n_samples`` (fewer, down to none, once the tone has finished)."""
        if self._stop_at is not None:
            n_samples = max(0, min(n_samples, self._stop_at - self._position))
        n = np.arange(self._position, self._position + n_samples)
        self._position += n_samples
        out = np.zeros(n_samples)
        phase_in_cycle = n % self._cycle
        index = np.searchsorted(self._ends, phase_in_cycle, side="right")
        for i, segment in enumerate(self._tone.segments):
            mask = index == i
            if not segment.freqs or not mask.any():
                continue
            t = n[mask] / self._rate
            wave = sum(np.sin(2 * math.pi * f * t) for f in segment.freqs)
            out[mask] = wave * self._edges(i, phase_in_cycle[mask], n[mask])
        if self._stop_at is not None:  # fade out before the stop
            out *= _fade(self._stop_at - n, self._ramp)
        out *= _fade(n + 1, self._ramp)  # the very start of the stream fades in
        return np.round(out * self._amplitude).astype("<i2").tobytes()

    def stop(self) -> None:
        """Fade out from here over the ramp time (then :attr:`finished`); keep reading to play the fade."""
        stop_at = self._position + self._ramp
        self._stop_at = stop_at if self._stop_at is None else min(self._stop_at, stop_at)

    def _edges(self, i: int, in_cycle: np.ndarray, absolute: np.ndarray) -> np.ndarray:
        """Fades where this segment starts or ends next to a different sound."""
        segments = self._tone.segments
        count = len(segments)
        gain = np.ones(in_cycle.size)
        previous = segments[(i - 1) % count] if (i > 0 or self._tone.repeat) else None
        following = segments[(i + 1) % count] if (i < count - 1 or self._tone.repeat) else None
        if previous is None or previous.freqs != segments[i].freqs:
            gain *= _fade(in_cycle - self._starts[i] + 1, self._ramp)
        if following is None or following.freqs != segments[i].freqs:
            gain *= _fade(self._ends[i] - in_cycle, self._ramp)
        return gain


def _fade(samples_from_edge: np.ndarray, ramp: int) -> np.ndarray:
    """Raised-cosine gain: 0 at the edge, 1 from ``ramp`` samples in."""
    x = np.clip(samples_from_edge / ramp, 0.0, 1.0)
    return np.asarray(0.5 - 0.5 * np.cos(math.pi * x))


def render(tone: Tone, seconds: float, sample_rate: int, level_dbfs: float = -18.0) -> bytes:
    """``seconds`` of a tone as PCM16 (shorter for a tone played once)."""
    return ToneGenerator(tone, sample_rate, level_dbfs).read(round(seconds * sample_rate))
