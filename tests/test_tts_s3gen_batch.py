"""S3Gen vocoding several callers' windows in one batch, for real (random-weight Chatterbox on CPU).

On a CPU batching S3Gen saves nothing, so the engine batches it on CUDA only; here it is forced on.
Three callers with different voices and window lengths vocode together (one module run): each one's
audio is the library's own for that window alone with the same seed, and one who hangs up mid-batch
leaves at the next flow step while the others finish. A window that makes the shared call fail fails
alone. Voices carry a short S3Gen prompt (tests.helpers.short_prompt) to keep S3Gen quick here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cloud_server.tts.base import VoiceSpec
from cloud_server.tts.chatterbox_batched import vocode_window
from cloud_server.tts.chatterbox_call import Interrupted, SentenceCall
from cloud_server.tts.chatterbox_engine import ChatterboxEngine
from cloud_server.tts.chatterbox_plan import vocoder_batching
from cloud_server.tts.s3gen_hooks import batch_decode, prepare_for_concurrent_windows, watch_flow_steps
from cloud_server.tts.vocoder_batch import FlowJob, VocoderBatcher
from common.config import ChatterboxConfig
from tests.helpers import short_prompt

TOLERANCE = 1e-5
"""Largest sample difference allowed between a window vocoded in the batch and alone (full scale 1.0;
the random-weight audio peaks near 0.05). Only the order of float sums differs: measured ~1e-7."""
FLOW_STEPS = 10
HANG_UP_AT_STEP = 3
WAIT_SECONDS = 600.0


@dataclasses.dataclass
class _Caller:
    conds: Any
    window: list[int]
    seed: int
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    audio: Any = None
    error: BaseException | None = None
    left_at_step: int | None = None


def _alone(engine: ChatterboxEngine, caller: _Caller) -> Any:
    """The library's own S3Gen call for this window, alone, after seeding as the batch does."""
    torch.manual_seed(caller.seed)
    return engine.vocode(short_prompt(caller.conds), caller.window)


@contextlib.contextmanager
def _batch_of(engine: ChatterboxEngine, size: int) -> Any:
    """The model's S3Gen batch, holding its first batch until ``size`` windows wait (deterministic)."""
    s3gen = engine.loaded.model.s3gen
    prepare_for_concurrent_windows(s3gen)
    batcher = VocoderBatcher(batch_decode(s3gen), gather_seconds=WAIT_SECONDS, max_windows=size,
                             autocast=contextlib.nullcontext)
    engine.loaded.vocoder_batcher = batcher
    try:
        yield batcher
    finally:
        engine.loaded.vocoder_batcher = None
        batcher.close()


def _vocode_together(engine: ChatterboxEngine, callers: list[_Caller], steps: list[int]) -> None:
    """Each caller on its own thread, as speak_batched vocodes a sentence's first window."""

    def run(caller: _Caller) -> None:
        call = SentenceCall(100, time.monotonic() + WAIT_SECONDS, caller.cancel)
        check = call.check

        def recorded_check() -> None:
            try:
                check()
            except Interrupted:
                caller.left_at_step = steps[0]
                raise

        call.check = recorded_check  # type: ignore[method-assign]
        try:
            caller.audio = vocode_window(engine, short_prompt(caller.conds), caller.window, call, True, caller.seed)
        except Exception as err:
            caller.error = err

    threads = [threading.Thread(target=run, args=(caller,)) for caller in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_SECONDS)
    assert not any(thread.is_alive() for thread in threads)


def _spy_steps(patch: pytest.MonkeyPatch, engine: ChatterboxEngine, after_step: Any) -> list[int]:
    estimator = engine.loaded.model.s3gen.flow.decoder.estimator
    inner, steps = estimator.forward, [0]

    def spy(*args: Any, **kwargs: Any) -> Any:
        steps[0] += 1
        after_step(steps[0], kwargs)  # may raise: a failure of the shared call
        return inner(*args, **kwargs)

    patch.setattr(estimator, "forward", spy)
    return steps


@pytest.fixture(scope="module")
def forced_on(chatterbox_models: Any, chatterbox_config: ChatterboxConfig) -> ChatterboxEngine:
    return ChatterboxEngine(dataclasses.replace(chatterbox_config, batch=True, vocoder_batch=True),
                            chatterbox_models.get("standard"))


@pytest.fixture(scope="module")
def voices(forced_on: ChatterboxEngine, voice_clips: dict[str, Path]) -> dict[str, Any]:
    specs = {"builtin": VoiceSpec(), **{name: VoiceSpec(name, str(clip)) for name, clip in voice_clips.items()}}
    with forced_on.loaded.lock:
        return {name: short_prompt(forced_on._pristine(spec)) for name, spec in specs.items()}


@pytest.fixture(scope="module")
def batch_run(forced_on: ChatterboxEngine, voices: dict[str, Any]) -> Any:
    """A (built-in voice, 6 tokens), B (alice, 4) and C (bob, 9) together; B hangs up as step 3 ends."""
    callers = {
        "A": _Caller(voices["builtin"], list(range(100, 106)), 11),
        "B": _Caller(voices["alice"], list(range(200, 204)), 22),
        "C": _Caller(voices["bob"], list(range(300, 309)), 33),
    }
    alone = {name: _alone(forced_on, callers[name]) for name in "AC"}

    def hang_up_b(step: int, _kwargs: Any) -> None:
        if step == HANG_UP_AT_STEP:
            callers["B"].cancel.set()

    with pytest.MonkeyPatch.context() as patch, _batch_of(forced_on, 3) as batcher:
        steps = _spy_steps(patch, forced_on, hang_up_b)
        _vocode_together(forced_on, list(callers.values()), steps)
    return callers, alone, batcher.stats, steps[0]


def test_each_caller_s_window_vocoded_in_one_batch_is_its_window_alone(batch_run: Any) -> None:
    callers, alone, stats, steps = batch_run
    assert (stats.batches, stats.largest_batch, steps) == (1, 3, FLOW_STEPS), "one batched call, 10 flow steps"
    for name in "AC":
        caller = callers[name]
        assert caller.error is None and caller.audio.shape == alone[name].shape
        assert float(np.abs(caller.audio - alone[name]).max()) <= TOLERANCE
        assert float(np.abs(alone[name]).max()) > 100 * TOLERANCE, "the audio is not silence"


def test_a_caller_hanging_up_mid_batch_leaves_at_the_next_flow_step_and_the_others_finish(batch_run: Any) -> None:
    callers, _alone, _stats, steps = batch_run
    b = callers["B"]
    assert isinstance(b.error, Interrupted) and b.error.cancelled and b.audio is None
    assert b.left_at_step is not None and b.left_at_step <= HANG_UP_AT_STEP + 1, "B left at the next flow step"
    assert steps == FLOW_STEPS and callers["A"].audio is not None and callers["C"].audio is not None


def test_a_window_that_makes_the_batch_fail_fails_alone(
    forced_on: ChatterboxEngine, voices: dict[str, Any], batch_run: Any
) -> None:
    first_run, alone = batch_run[0], batch_run[1]
    ok = dataclasses.replace(first_run["A"], cancel=threading.Event(), audio=None)  # A again, same seed
    failing = _Caller(voices["bob"], list(range(400, 412)), 44)  # the longest window: the batch has its length
    frames = failing.conds.gen["prompt_feat"].shape[1] + 2 * len(failing.window)

    def fail_on_its_frames(_step: int, kwargs: Any) -> None:
        if kwargs["x"].shape[-1] == frames:
            raise RuntimeError("the estimator failed on this window")

    with pytest.MonkeyPatch.context() as patch, _batch_of(forced_on, 2) as batcher:
        steps = _spy_steps(patch, forced_on, fail_on_its_frames)
        _vocode_together(forced_on, [ok, failing], steps)
    assert isinstance(failing.error, RuntimeError) and failing.audio is None, "its caller goes to the fallback voice"
    assert ok.error is None and float(np.abs(ok.audio - alone["A"]).max()) <= TOLERANCE, "the other is unharmed"
    assert batcher.stats.retried_alone == 2


def test_first_windows_go_first_and_later_ones_wait_their_turn() -> None:
    release, batches = threading.Event(), []

    def decode(**kwargs: Any) -> Any:
        batches.append(sorted(int(v) for v in kwargs["mu"][:, 0, 0].tolist()))
        release.wait(WAIT_SECONDS)
        return kwargs["mu"], None

    def job(tag: int, first: bool) -> FlowJob:
        mu = torch.full((1, 80, 4), float(tag))
        return FlowJob(mu, torch.ones(1, 1, 4), torch.zeros(1, 80), mu, mu, 10, False, first, lambda: None)

    batcher = VocoderBatcher(decode, gather_seconds=0.0, max_windows=2, autocast=contextlib.nullcontext)
    try:
        jobs = [batcher.submit(job(1, False))]
        while not batches:
            time.sleep(0.01)
        jobs += [batcher.submit(job(tag, first)) for tag, first in ((2, False), (3, False), (4, True))]
        release.set()
        results = [j.wait(lambda: None) for j in jobs]
    finally:
        batcher.close()
    assert batches == [[1], [2, 4], [3]], "the first window overtook the later windows that came before it"
    assert [int(r[0, 0, 0]) for r in results] == [1, 2, 3, 4]


def test_vocoder_batching_is_on_for_cuda_and_off_for_cpu_unless_forced(
    forced_on: ChatterboxEngine, chatterbox_config: ChatterboxConfig
) -> None:
    assert vocoder_batching("auto", "cuda") and not vocoder_batching("auto", "cpu")
    assert vocoder_batching(True, "cpu") and not vocoder_batching(False, "cuda")
    loaded = forced_on.loaded
    assert forced_on.vocoder_batched
    assert not ChatterboxEngine(dataclasses.replace(chatterbox_config, batch=True), loaded).vocoder_batched
    off = dataclasses.replace(chatterbox_config, batch=False, vocoder_batch=True)
    assert not ChatterboxEngine(off, loaded).vocoder_batched, "no S3Gen batch without the T3 batch"


def test_the_flow_step_check_runs_on_a_compiled_estimator() -> None:
    s3gen = torch.nn.Module()
    s3gen.flow = torch.nn.Module()
    s3gen.flow.decoder = torch.nn.Module()
    plain = torch.nn.Linear(4, 4)
    s3gen.flow.decoder.estimator = torch.compile(plain, backend="eager", dynamic=True)  # as compile_modules does
    steps: list[int] = []
    watch_flow_steps(s3gen, lambda: steps.append(1))
    x = torch.randn(2, 4)
    with torch.inference_mode():
        out = [s3gen.flow.decoder.estimator.forward(x) for _ in range(3)]  # as the solver calls it
    assert len(steps) == 3 and all(torch.allclose(o, plain(x)) for o in out)
