"""Streaming inside a sentence, the pure parts: the window schedule and the stitching of window audio."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_server.tts.stream_stitch import CROSSFADE_SAMPLES, Stitcher, StreamPlan, next_window_end, window_start

PLAN = StreamPlan(first_chunk_tokens=4, chunk_tokens=6, context_tokens=5, holdback_tokens=2, samples_per_token=10)


def test_a_small_first_window_then_larger_ones_then_the_rest() -> None:
    assert next_window_end(0, 3, False, PLAN) is None
    assert next_window_end(0, 4, False, PLAN) == 4
    assert next_window_end(4, 9, False, PLAN) is None
    assert next_window_end(4, 10, False, PLAN) == 10
    assert next_window_end(4, 17, False, PLAN) == 17, "T3 ran ahead: take all it has"
    assert next_window_end(10, 12, True, PLAN) == 12, "T3 finished: the rest, however short"
    assert next_window_end(12, 12, True, PLAN) is None
    assert (window_start(0, PLAN), window_start(3, PLAN), window_start(10, PLAN)) == (0, 0, 5)


@pytest.mark.parametrize(
    "changes",
    [{"holdback_tokens": 4}, {"holdback_tokens": -1}, {"context_tokens": 3}, {"chunk_tokens": 2}],
)
def test_a_plan_that_cannot_stitch_is_refused(changes: dict[str, int]) -> None:
    settings = {"first_chunk_tokens": 4, "chunk_tokens": 6, "context_tokens": 5, "holdback_tokens": 2, **changes}
    with pytest.raises(ValueError, match="stream_"):
        StreamPlan(**settings)


def _stitched(signal: np.ndarray, renders: list[tuple[int, int, bool]], plan: StreamPlan) -> list[np.ndarray]:
    """Stitch windows of ``signal`` given as (first token, end token, final)."""
    stitcher = Stitcher(plan)
    spt = plan.samples_per_token
    pieces = [stitcher.add(signal[a * spt : b * spt], a, final) for a, b, final in renders]
    return [*pieces, stitcher.finish()]


def test_windows_of_one_signal_stitch_back_into_exactly_that_signal() -> None:
    plan = StreamPlan(first_chunk_tokens=4, chunk_tokens=6, context_tokens=5, holdback_tokens=2,
                      samples_per_token=400)
    signal = np.sin(np.arange(20 * 400) / 7.0).astype(np.float32)
    pieces = _stitched(signal, [(0, 4, False), (0, 10, False), (5, 16, False), (11, 20, True)], plan)
    assert np.allclose(np.concatenate(pieces), signal, atol=1e-6)
    assert [len(p) for p in pieces] == [2 * 400, 6 * 400, 6 * 400, 6 * 400, 0], "held back: 2 tokens per window"


def test_a_different_second_render_is_cross_faded_from_the_exact_sample_where_output_stopped() -> None:
    plan = StreamPlan(first_chunk_tokens=4, chunk_tokens=6, context_tokens=5, holdback_tokens=2,
                      samples_per_token=400)
    first, second = np.full(4 * 400, 0.5, np.float32), np.full(10 * 400, -0.5, np.float32)
    stitcher = Stitcher(plan)
    out = np.concatenate([stitcher.add(first, 0, False), stitcher.add(second, 0, True)])
    assert len(out) == 10 * 400
    steps = np.abs(np.diff(out))
    assert steps.max() < 1.0 / CROSSFADE_SAMPLES * 2, "a ramp, not a click"
    assert out[2 * 400 - 1] == 0.5 and out[2 * 400 + CROSSFADE_SAMPLES] == -0.5


def test_a_window_that_starts_after_what_was_played_is_a_bug_not_a_gap() -> None:
    stitcher = Stitcher(PLAN)
    stitcher.add(np.zeros(40, np.float32), 0, False)
    with pytest.raises(ValueError, match="after"):
        stitcher.add(np.zeros(40, np.float32), 3, False)
