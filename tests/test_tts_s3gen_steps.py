"""A hang-up inside an S3Gen window is seen at the next flow step (random-weight Chatterbox on CPU).

chatterbox-tts 0.1.7's flow solver calls ``estimator.forward(...)`` directly, past module hooks; the
engine's check wraps the instance's ``forward`` instead. Steps are counted by a spy on that attribute
(what the solver calls), never by the clock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import torch

from cloud_server.tts.base import VoiceSpec
from cloud_server.tts.chatterbox_call import Interrupted, SentenceCall
from cloud_server.tts.chatterbox_engine import ChatterboxEngine
from tests.helpers import short_prompt

FLOW_STEPS = 10
"""Standard Chatterbox's S3Gen solves each window in 10 flow steps."""
HANG_UP_AT_STEP = 3
WINDOW = list(range(100, 106))


def _count_steps(monkeypatch: pytest.MonkeyPatch, engine: ChatterboxEngine, at_step: Any = None) -> list[int]:
    """Count the estimator's passes as the solver makes them; ``at_step(n)`` runs as pass n ends."""
    estimator = engine.loaded.model.s3gen.flow.decoder.estimator
    inner = estimator.forward
    steps = [0]

    def spy(*args: Any, **kwargs: Any) -> Any:
        steps[0] += 1
        out = inner(*args, **kwargs)
        if at_step is not None:
            at_step(steps[0])
        return out

    monkeypatch.setattr(estimator, "forward", spy)
    return steps


def test_hanging_up_during_a_window_stops_it_at_the_next_flow_step_and_the_next_caller_is_unaffected(
    chatterbox_engine: ChatterboxEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, loaded = chatterbox_engine, chatterbox_engine.loaded
    conds = short_prompt(engine._pristine(VoiceSpec()))
    torch.manual_seed(5)
    before = engine.vocode(short_prompt(conds), WINDOW)  # the next caller's window, before anyone hung up

    cancel = threading.Event()
    steps = _count_steps(monkeypatch, engine, lambda n: cancel.set() if n == HANG_UP_AT_STEP else None)
    loaded.call = SentenceCall(100, time.monotonic() + 300.0, cancel)  # as the gate does for its caller
    try:
        with pytest.raises(Interrupted) as stopped:
            engine.vocode(short_prompt(conds), WINDOW)
    finally:
        loaded.call = None
    assert stopped.value.cancelled
    stopped_at = steps[0]
    assert stopped_at <= HANG_UP_AT_STEP + 1 < FLOW_STEPS, f"the window went on for {stopped_at} flow steps"

    loaded.call = SentenceCall(100, time.monotonic() + 300.0, threading.Event())  # the next caller
    try:
        torch.manual_seed(5)
        after = engine.vocode(short_prompt(conds), WINDOW)
    finally:
        loaded.call = None
    assert steps[0] == stopped_at + FLOW_STEPS, "the next caller's window ran all its steps"
    assert np.array_equal(after, before), "the next caller's audio is what it would have been"
