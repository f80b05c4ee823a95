"""Call-progress tones: every tone of every plan checked by frequency (FFT peaks) and cadence (envelope)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pi_client.telephone.tones import PLANS, RAMP_SECONDS, Tone, ToneGenerator, render
from tests.tone_check import peaks, samples

RATE = 16000
LEVEL_DBFS = -18.0
AMPLITUDE = 32767 * 10 ** (LEVEL_DBFS / 20)
HOP = RATE // 200  # 5 ms envelope
ALL_TONES = [(plan, name) for plan, tones in PLANS.items() for name in tones]

EXPECTED = {
    ("north_american", "dial"): [((350.0, 440.0), math.inf)],
    ("north_american", "ringback"): [((440.0, 480.0), 2.0), ((), 4.0)],
    ("north_american", "busy"): [((480.0, 620.0), 0.5), ((), 0.5)],
    ("north_american", "reorder"): [((480.0, 620.0), 0.25), ((), 0.25)],
    ("north_american", "off_hook"): [((1400.0, 2060.0, 2450.0, 2600.0), 0.1), ((), 0.1)],
    ("north_american", "sit"): [((913.8,), 0.33), ((1370.6,), 0.33), ((1776.7,), 0.33)],
    ("european", "dial"): [((425.0,), math.inf)],
    ("european", "ringback"): [((425.0,), 1.0), ((), 4.0)],
    ("european", "busy"): [((425.0,), 0.5), ((), 0.5)],
    ("european", "reorder"): [((425.0,), 0.25), ((), 0.25)],
    ("european", "off_hook"): [((1400.0, 2060.0, 2450.0, 2600.0), 0.1), ((), 0.1)],
    ("european", "sit"): [((950.0,), 0.33), ((), 0.03), ((1400.0,), 0.33), ((), 0.03), ((1800.0,), 0.33)],
}
"""The tone plans as a listener would describe them, written out independently of the module."""


def on_off_runs(x: np.ndarray) -> list[tuple[bool, float]]:
    """(sounding, seconds) runs of the 5 ms RMS envelope against a tenth of the tone's level."""
    usable = x[: x.size - x.size % HOP].reshape(-1, HOP)
    on = np.sqrt((usable**2).mean(axis=1)) > 0.1 * AMPLITUDE
    runs: list[tuple[bool, float]] = []
    start = 0
    for i in range(1, on.size + 1):
        if i == on.size or on[i] != on[start]:
            runs.append((bool(on[start]), (i - start) * HOP / RATE))
            start = i
    return runs


@pytest.mark.parametrize(("plan", "name"), ALL_TONES)
def test_every_tone_has_its_frequencies_in_each_segment(plan: str, name: str) -> None:
    tone = PLANS[plan][name]
    expected = EXPECTED[(plan, name)]
    x = samples(render(tone, 2 * tone.cycle_seconds, RATE, LEVEL_DBFS))
    t = 0.0
    for freqs, seconds in expected:
        length = 1.0 if seconds == math.inf else seconds
        middle = x[round((t + 0.1 * length) * RATE) : round((t + 0.9 * length) * RATE)]
        if freqs:
            found = peaks(middle, len(freqs))
            resolution = 1.0 / (0.8 * length)
            assert found == pytest.approx(freqs, abs=max(1.0, resolution)), (plan, name, freqs, found)
            rms = float(np.sqrt((middle**2).mean()))
            assert rms == pytest.approx(AMPLITUDE * math.sqrt(len(freqs) / 2), rel=0.05)  # each at the set level
        else:
            assert np.abs(middle).max() == 0
        t += length


@pytest.mark.parametrize(("plan", "name"), ALL_TONES)
def test_every_tone_has_its_cadence(plan: str, name: str) -> None:
    tone = PLANS[plan][name]
    expected = EXPECTED[(plan, name)]
    x = samples(render(tone, 3 * tone.cycle_seconds, RATE, LEVEL_DBFS))
    runs = on_off_runs(x)
    if expected[0][1] == math.inf:  # steady: sounding throughout, from the first 5 ms on
        assert runs == [(True, pytest.approx(x.size / RATE, abs=0.006))]
        return
    # Segments of one sound merge with their sounding neighbours (SIT without gaps): merge the plan likewise.
    merged: list[tuple[bool, float]] = []
    for freqs, seconds in expected:
        if merged and merged[-1][0] == bool(freqs):
            merged[-1] = (merged[-1][0], merged[-1][1] + seconds)
        else:
            merged.append((bool(freqs), seconds))
    cycles = 3 if tone.repeat else 1
    want = merged * cycles
    got = runs
    assert [on for on, _ in got] == [on for on, _ in want], (plan, name, got)
    for (_, got_seconds), (_, want_seconds) in zip(got, want, strict=True):
        assert got_seconds == pytest.approx(want_seconds, abs=0.011), (plan, name, got)


@pytest.mark.parametrize(("plan", "name"), ALL_TONES)
def test_no_clicks_anywhere_even_across_loops_chunks_and_a_stop(plan: str, name: str) -> None:
    tone = PLANS[plan][name]
    generator = ToneGenerator(tone, RATE, LEVEL_DBFS)
    rng = np.random.default_rng(1)
    chunks = [generator.read(int(rng.integers(1, 2000))) for _ in range(round(2.2 * tone.cycle_seconds * RATE / 1000))]
    generator.stop()
    chunks.append(generator.read(RATE))
    assert generator.finished
    x = np.concatenate(([0.0], samples(b"".join(chunks)), [0.0]))  # silence before and after
    # The steepest a smooth sum of these sines can move in one sample; a click jumps far more.
    all_freqs = {f for segment in tone.segments for f in segment.freqs}
    slope = max(AMPLITUDE * sum(2 * math.pi * f / RATE for f in s.freqs) for s in tone.segments if s.freqs)
    assert np.abs(np.diff(x)).max() <= 1.1 * slope + 2, sorted(all_freqs)


@pytest.mark.parametrize(("plan", "name"), ALL_TONES)
def test_chunked_reading_is_the_same_stream(plan: str, name: str) -> None:
    tone = PLANS[plan][name]
    whole = render(tone, 1.3 * tone.cycle_seconds, RATE, LEVEL_DBFS)
    generator = ToneGenerator(tone, RATE, LEVEL_DBFS)
    pieces, total = [], len(whole) // 2
    size = 1
    while sum(len(p) for p in pieces) // 2 < total and len(pieces) < 10_000:
        pieces.append(generator.read(min(size, total - sum(len(p) for p in pieces) // 2)))
        size = size * 3 % 1777 + 1
    assert b"".join(pieces) == whole


def test_a_steady_tone_loops_seamlessly() -> None:
    """Past the first ramp, the dial tone is the ideal sine sum to within rounding, across every loop."""
    x = samples(render(PLANS["north_american"]["dial"], 3.5, RATE, LEVEL_DBFS))
    t = np.arange(x.size) / RATE
    ideal = AMPLITUDE * (np.sin(2 * math.pi * 350 * t) + np.sin(2 * math.pi * 440 * t))
    skip = round(RAMP_SECONDS * RATE)
    assert np.abs(x[skip:] - ideal[skip:]).max() <= 1.0


def test_a_tone_played_once_ends() -> None:
    generator = ToneGenerator(PLANS["north_american"]["sit"], RATE, LEVEL_DBFS)
    pcm = generator.read(5 * RATE)
    assert len(pcm) // 2 == round(0.99 * RATE)
    assert generator.finished
    assert generator.read(100) == b""


def test_other_rates_keep_the_frequencies() -> None:
    x = samples(render(PLANS["european"]["dial"], 1.0, 8000, LEVEL_DBFS))
    spectrum = np.abs(np.fft.rfft(x))
    assert int(np.argmax(spectrum)) == 425  # 1 Hz bins over one second
    assert isinstance(PLANS["european"]["dial"], Tone)
