"""Batched T3 across callers, for real (random-weight Chatterbox on CPU, tiny token budgets).

One batch run (module fixture) serves two tests: four callers decode together, one joins late, one
leaves early, one hangs up mid-batch. Another sends one failing sentence into a batch through the
reply pipeline: only that caller hears the fallback voice. Turbo's batch is checked against Turbo's
own loop; admission's default is eight replies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from cloud_server.llm.ollama import OllamaLLM
from cloud_server.pipeline.admission import Busy, ReplySlots
from cloud_server.pipeline.reply import ReplyPipeline, TurnStats
from cloud_server.pipeline.sessions import SessionStore
from cloud_server.tts.base import TTSEngine, VoiceSpec
from cloud_server.tts.chatterbox_batched import t3_inputs
from cloud_server.tts.chatterbox_call import Interrupted, SentenceCall
from cloud_server.tts.chatterbox_engine import ChatterboxEngine, LoadedChatterbox
from cloud_server.tts.t3_batch import T3Batcher, T3Job
from cloud_server.tts.t3_sequence import T3Sequence
from common.config import ChatterboxConfig, LimitsConfig, LLMConfig, ServerConfig

SENTENCE = "Hello there, this is the operator."
WAIT_SECONDS = 600.0


@dataclasses.dataclass
class _Caller:
    name: str
    budget: int
    seed: int
    inputs: dict[str, Any]
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    job: T3Job | None = None


@pytest.fixture(scope="module")
def batch_run(chatterbox_models: Any, chatterbox_config: ChatterboxConfig, voice_clips: dict[str, Path]) -> Any:
    """Four callers: A and B and D start together, C joins once A has two tokens, D hangs up after two."""
    loaded = chatterbox_models.get("standard")
    engine = ChatterboxEngine(dataclasses.replace(chatterbox_config, batch=True), loaded)
    alice = VoiceSpec("alice", str(voice_clips["alice"]), exaggeration=0.7, cfg_weight=0.3, temperature=1.0)
    bob = VoiceSpec("bob", str(voice_clips["bob"]), exaggeration=0.4, cfg_weight=0.6, temperature=0.7)
    callers = {
        "A": _Caller("A", 6, 7, t3_inputs(engine, SENTENCE, VoiceSpec())),
        "B": _Caller("B", 2, 3, t3_inputs(engine, "Yes.", alice)),
        "C": _Caller("C", 3, 5, t3_inputs(engine, "A caller who comes in late, with a longer sentence.", bob)),
        "D": _Caller("D", 6, 9, t3_inputs(engine, "Hang up on me.", VoiceSpec())),
    }
    events: list[tuple[str, int]] = []
    batcher = T3Batcher(loaded.model.t3, gather_seconds=0.02, max_sequences=8, autocast=contextlib.nullcontext)

    def submit(caller: _Caller) -> None:
        def on_token(token: int) -> None:
            events.append((caller.name, token))
            if caller.name == "A" and len([e for e in events if e[0] == "A"]) == 2:
                submit(callers["C"])  # from the decoder's own thread: C joins at the next step
            if caller.name == "D" and len([e for e in events if e[0] == "D"]) == 2:
                caller.cancel.set()  # the caller hangs up mid-batch

        call = SentenceCall(caller.budget, time.monotonic() + WAIT_SECONDS, caller.cancel)
        sequence = T3Sequence(loaded.model.t3, False, caller.inputs, caller.budget, caller.seed)
        caller.job = batcher.submit(T3Job(sequence, on_token, call.check))

    try:
        for name in "ABD":
            submit(callers[name])
        for name in "ABDC":
            done = callers[name].job
            assert done is not None and done.done.wait(WAIT_SECONDS)
    finally:
        batcher.close()
    torch.manual_seed(callers["A"].seed)  # the library's own T3 loop, alone, with A's seed
    alone = loaded.model.t3.inference(**{**callers["A"].inputs, "max_new_tokens": callers["A"].budget})
    return callers, events, batcher.stats, alone


def test_a_caller_gets_the_same_speech_tokens_in_a_batch_as_alone_with_the_same_seed(batch_run: Any) -> None:
    callers, events, stats, alone = batch_run
    assert stats.largest_batch >= 3, "the callers really decoded together"
    assert stats.largest_prefill == 3, "A, B and D (prompts of different lengths) were prefilled in one forward"
    a_last = max(i for i, (name, _) in enumerate(events) if name == "A")
    c_first = min(i for i, (name, _) in enumerate(events) if name == "C")
    assert c_first < a_last, "C joined while A was still decoding, without waiting for A's sentence"
    job = callers["A"].job
    assert job.error is None
    # Others joined, left and hung up around A: its tokens are exactly the library's own, unbatched.
    assert job.result.tolist() == alone.tolist()
    assert len(job.result[0]) == callers["A"].budget
    for name in "BC":
        assert callers[name].job.error is None and len(callers[name].job.result[0]) == callers[name].budget


def test_one_caller_hanging_up_mid_batch_leaves_the_others_decoding(batch_run: Any) -> None:
    callers, events, _stats, _alone = batch_run
    d = callers["D"].job
    assert isinstance(d.error, Interrupted) and d.error.cancelled
    d_tokens = [token for name, token in events if name == "D"]
    assert 2 <= len(d_tokens) < callers["D"].budget, "D stopped at the next step after hanging up"
    d_gone = max(i for i, (name, _) in enumerate(events) if name == "D")
    assert any(name in "AC" for name, _ in events[d_gone + 1 :]), "the others went on decoding after D left"
    assert all(callers[name].job.error is None for name in "ABC")


def test_a_long_prompt_prefilled_in_chunks_lets_the_running_caller_go_on_with_the_same_tokens(
    chatterbox_models: Any, chatterbox_config: ChatterboxConfig
) -> None:
    """A decodes; B and C (prompts of different lengths) arrive together and are prefilled 16 positions at a time."""
    loaded = chatterbox_models.get("standard")
    engine = ChatterboxEngine(dataclasses.replace(chatterbox_config, batch=True), loaded)
    t3 = loaded.model.t3
    texts = {"A": "Yes.", "B": "A caller who comes in late, with a longer sentence.", "C": "Hang up on me."}
    budgets, seeds = {"A": 7, "B": 3, "C": 3}, {"A": 7, "B": 3, "C": 5}
    inputs = {name: t3_inputs(engine, text, VoiceSpec()) for name, text in texts.items()}
    events: list[str] = []
    jobs: dict[str, T3Job] = {}
    batcher = T3Batcher(t3, gather_seconds=0.02, max_sequences=8, autocast=contextlib.nullcontext, prefill_chunk=16)

    def submit(name: str) -> None:
        def on_token(_token: int) -> None:
            events.append(name)
            if name == "A" and events.count("A") == 1:
                submit("B")  # on the decoder's own thread: B and C are gathered together
                submit("C")

        sequence = T3Sequence(t3, False, inputs[name], budgets[name], seeds[name])
        jobs[name] = batcher.submit(T3Job(sequence, on_token, lambda: None))

    try:
        submit("A")
        tokens = {name: jobs[name].wait(lambda: None).tolist() for name in "ABC"}
    finally:
        batcher.close()
    stats = batcher.stats
    assert stats.largest_prefill == 2 and stats.prefill_groups == 2, "B and C were prefilled together"
    assert stats.prefill_chunks >= 1 + 3, "after their voice's conditioning, B's ~45 text positions went by 16"
    assert events.index("B") > 2, "A kept decoding while B and C were prefilled, not stalled for their prompts"
    for name in "ABC":  # the library's own T3 loop, alone, with each caller's seed
        torch.manual_seed(seeds[name])
        alone = t3.inference(**{**inputs[name], "max_new_tokens": budgets[name]})
        assert tokens[name] == alone.tolist(), name


def test_on_a_cpu_others_later_tokens_wait_while_a_callers_first_audio_is_being_made(
    chatterbox_models: Any, chatterbox_config: ChatterboxConfig
) -> None:
    loaded = chatterbox_models.get("standard")
    engine = ChatterboxEngine(dataclasses.replace(chatterbox_config, batch=True), loaded)
    t3 = loaded.model.t3
    batcher = T3Batcher(t3, gather_seconds=0.0, max_sequences=8, autocast=contextlib.nullcontext,
                        first_audio_first=True)
    first_audio = threading.Event()  # A's first window is with S3Gen until this is set
    inputs = t3_inputs(engine, "Yes.", VoiceSpec())
    jobs = [T3Job(T3Sequence(t3, False, inputs, 8, seed), lambda _t: None, lambda: None, first_window=2,
                  first_audio=event) for seed, event in ((3, first_audio), (5, None))]
    try:
        for job in jobs:
            batcher.submit(job)
        deadline = time.monotonic() + WAIT_SECONDS
        while not batcher.holding():  # the decoder pauses: S3Gen would share the cores with B's later tokens
            assert time.monotonic() < deadline and not any(job.done.is_set() for job in jobs)
            time.sleep(0.01)
        assert all(job.has_first_window() and not job.done.is_set() for job in jobs)
        b_tokens = list(jobs[1].sequence.sampled)
        first_audio.set()  # A's first window is vocoded: decoding goes on to the end
        assert [job.wait(lambda: None).size(1) for job in jobs] == [8, 8]
    finally:
        batcher.close()
    assert len(b_tokens) < 8 and batcher.stats.hold_seconds > 0


def test_a_sentence_failing_in_the_batch_sends_only_its_caller_to_the_fallback_voice(
    batched_engine: ChatterboxEngine, chatterbox_loaded: LoadedChatterbox, piper_engines: tuple[TTSEngine, TTSEngine]
) -> None:
    cfg = ServerConfig()
    pipeline = ReplyPipeline(cfg, OllamaLLM(LLMConfig()), batched_engine, piper_engines[1], SessionStore(cfg.sessions))
    # A voice whose conditionals are corrupt (NaN): its sentence fails in the decoder, at its own sampling.
    broken = VoiceSpec("broken", exaggeration=math.nan)
    stats = {"ok": TurnStats(), "failing": TurnStats()}
    audio: dict[str, bytes] = {}

    def speak(name: str, voice: VoiceSpec) -> None:
        audio[name] = b"".join(pipeline.speak_sentences(SENTENCE, voice, threading.Event(), stats[name]))

    first = threading.Thread(target=speak, args=("ok", VoiceSpec()))
    first.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while (chatterbox_loaded.batcher is None or chatterbox_loaded.batcher.stats.tokens < 1) and first.is_alive():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = threading.Thread(target=speak, args=("failing", broken))
    second.start()  # fails while the first caller's sentence is in the batch
    for thread in (first, second):
        thread.join(timeout=WAIT_SECONDS)
    assert stats["failing"].fallback_sentences == 1 and audio["failing"], "the fallback voice spoke it"
    assert stats["ok"].fallback_sentences == 0 and audio["ok"], "the other caller still heard Chatterbox"
    assert chatterbox_loaded.batcher is not None and chatterbox_loaded.batcher.stats.tokens >= 2
    assert not chatterbox_loaded.lock.locked() and not chatterbox_loaded.vocoder_lock.locked()


def test_with_the_default_settings_eight_replies_run_at_once_and_a_ninth_is_refused() -> None:
    slots = ReplySlots(LimitsConfig().queue_depth)
    held = [slots.take() for _ in range(8)]
    with pytest.raises(Busy):
        slots.take()
    held[0].release()
    slots.take()


def test_turbo_sentences_decode_together_with_the_tokens_the_library_gives_alone(
    turbo_engine: ChatterboxEngine,
) -> None:
    model = turbo_engine.loaded.model
    first = t3_inputs(turbo_engine, SENTENCE, VoiceSpec())
    other = t3_inputs(turbo_engine, "Yes.", VoiceSpec(temperature=1.0))
    batcher = T3Batcher(model.t3, gather_seconds=0.02, max_sequences=8, autocast=contextlib.nullcontext)
    try:
        jobs = [batcher.submit(T3Job(T3Sequence(model.t3, True, inputs, budget, seed), lambda _t: None, lambda: None))
                for inputs, budget, seed in ((first, 5, 7), (other, 3, 3))]
        tokens = [job.wait(lambda: None).tolist() for job in jobs]
    finally:
        batcher.close()
    assert batcher.stats.largest_batch == 2
    torch.manual_seed(7)  # Turbo's own loop alone (its wrapper caps it at 5 tokens in all)
    alone = model.t3.inference_turbo(**{**first, "max_gen_len": 5})
    assert tokens[0] == alone.tolist() and len(tokens[1][0]) == 3
