"""Chatterbox for real (chatterbox-tts 0.1.7 on a random-weight checkpoint of the true architecture).

The audio is noise, but loading, voice conditionals, generation, sample rate, the token bound, the
lock and the failure paths are the library's own. One model per session (see fixtures_tts.py).
"""

from __future__ import annotations

import dataclasses
import operator
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cloud_server.tts.base import TTSError, VoiceSpec
from cloud_server.tts.chatterbox_engine import ChatterboxEngine, LoadedChatterbox, compile_modules
from cloud_server.tts.chatterbox_plan import (
    COMPILED_MODULES,
    SAMPLES_PER_TOKEN,
    DevicePlan,
    plan_device,
    token_budget,
)
from common.config import ChatterboxConfig
from common.wav import pcm16_to_float

SENTENCE = "Hello there, this is the operator."
THREAD_TIMEOUT = 240.0


# --------------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    ("requested", "cuda", "bf16", "compile_", "mixed", "expected"),
    [
        ("auto", False, False, False, False, DevicePlan("cpu", False, None)),
        ("cpu", True, True, False, False, DevicePlan("cpu", False, None)),
        ("auto", True, True, True, True, DevicePlan("cuda", True, "bfloat16")),
        ("cuda", True, False, False, True, DevicePlan("cuda", False, "float16")),
        ("auto", True, True, False, False, DevicePlan("cuda", False, None)),
    ],
)
def test_device_plan(requested: Any, cuda: bool, bf16: bool, compile_: bool, mixed: bool, expected: DevicePlan) -> None:
    plan = plan_device(requested, cuda_available=cuda, bf16_supported=bf16, compile=compile_, mixed_precision=mixed)
    assert plan == expected


def test_device_plan_ignores_cuda_switches_on_cpu_and_says_so() -> None:
    plan = plan_device("auto", cuda_available=False, bf16_supported=False, compile=True, mixed_precision=True)
    assert (plan.device, plan.compile, plan.autocast_dtype) == ("cpu", False, None)
    assert any("compile" in n for n in plan.notes) and any("mixed_precision" in n for n in plan.notes)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune"])
def test_on_cuda_compile_covers_t3_and_s3gen_in_the_configured_mode(mode: Any) -> None:
    plan = plan_device("cuda", cuda_available=True, bf16_supported=True, compile=True, mixed_precision=True,
                       compile_mode=mode)
    assert plan.compiled_modules == ("t3.tfmr", "s3gen.flow.encoder", "s3gen.flow.decoder.estimator")
    assert (plan.compile_mode, plan.autocast_dtype) == (mode, "bfloat16")


def test_on_cpu_nothing_is_compiled_whatever_the_mode() -> None:
    plan = plan_device("auto", cuda_available=False, bf16_supported=False, compile=True, mixed_precision=True,
                       compile_mode="reduce-overhead")
    assert plan.compiled_modules == () and plan.autocast_dtype is None


class _Flow(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(2, 2)
        self.decoder = torch.nn.Module()
        self.decoder.estimator = torch.nn.Linear(2, 2)


def _standin_model() -> Any:
    """The attribute layout of a Chatterbox model, with tiny modules."""
    model = torch.nn.Module()
    model.t3 = torch.nn.Module()
    model.t3.tfmr = torch.nn.Linear(2, 2)
    model.s3gen = torch.nn.Module()
    model.s3gen.flow = _Flow()
    return model


def test_compile_puts_compiled_modules_in_place_with_the_plan_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Any, Any, Any]] = []
    real_compile = torch.compile

    def recording_compile(module: Any, **kwargs: Any) -> Any:
        asked.append((module, kwargs.get("mode"), kwargs.get("dynamic")))
        return real_compile(module, **kwargs)  # lazy: nothing is compiled until the module is called

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = _standin_model()
    originals = [operator.attrgetter(p)(model) for p in COMPILED_MODULES]
    plan = plan_device("cuda", cuda_available=True, bf16_supported=True, compile=True, mixed_precision=False,
                       compile_mode="reduce-overhead")
    compile_modules(model, plan)
    assert asked == [(m, "reduce-overhead", True) for m in originals]
    for path, original in zip(COMPILED_MODULES, originals, strict=True):
        replaced = operator.attrgetter(path)(model)
        assert replaced is not original and getattr(replaced, "_orig_mod", None) is original


def test_compile_leaves_the_model_alone_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("torch.compile must not be used on CPU"))
    model = _standin_model()
    plan = plan_device("cpu", cuda_available=True, bf16_supported=True, compile=True, mixed_precision=True)
    compile_modules(model, plan)
    assert isinstance(model.t3.tfmr, torch.nn.Linear)
    assert isinstance(model.s3gen.flow.decoder.estimator, torch.nn.Linear)


def test_device_plan_refuses_cuda_without_a_gpu() -> None:
    with pytest.raises(ValueError, match="cuda"):
        plan_device("cuda", cuda_available=False, bf16_supported=False, compile=False, mixed_precision=False)


@pytest.mark.parametrize(("chars", "expected"), [(0, 50), (10, 50), (100, 300), (280, 840), (1000, 1000)])
def test_token_budget_grows_with_text_within_bounds(chars: int, expected: int) -> None:
    assert token_budget(chars, tokens_per_char=3.0, min_tokens=50, max_tokens=1000) == expected


# --------------------------------------------------------------------------- the real engine


def _spy(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str, before: Any = None) -> list[Any]:
    """Record calls to the real ``obj.name`` (it still runs)."""
    real = getattr(obj, name)
    calls: list[Any] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(before() if before else (args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)
    return calls


def _engine(cfg: ChatterboxConfig, loaded: LoadedChatterbox, **changes: Any) -> ChatterboxEngine:
    """Another engine on the session's model (never a second model)."""
    return ChatterboxEngine(dataclasses.replace(cfg, **changes), loaded)


def test_speaks_pcm16_at_24k_bounded_by_the_token_budget(chatterbox_engine: ChatterboxEngine) -> None:
    chunks = list(chatterbox_engine.synthesize(SENTENCE, VoiceSpec()))
    pcm = b"".join(chunks)
    assert chatterbox_engine.sample_rate == 24000
    engine = chatterbox_engine
    assert (engine.name, engine.device, engine.degraded) == ("chatterbox", "cpu", False)
    assert pcm and len(pcm) % 2 == 0 and all(len(c) % 2 == 0 for c in chunks)
    cfg = chatterbox_engine.cfg
    budget = token_budget(len(SENTENCE), cfg.max_tokens_per_char, cfg.min_tokens, cfg.max_tokens)
    assert budget < 1000, "the test budget must be the engine's cap, not the library's"
    assert len(pcm) // 2 <= budget * SAMPLES_PER_TOKEN
    assert float(np.abs(pcm16_to_float(pcm)).max()) > 0.0


def test_conditionals_cached_on_disk_and_reused_by_a_new_engine(
    chatterbox_config: ChatterboxConfig,
    chatterbox_loaded: LoadedChatterbox,
    voice_clips: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    computed = _spy(monkeypatch, chatterbox_loaded.model, "prepare_conditionals")
    cache_dir = tmp_path / "conds"
    voice = VoiceSpec(voice_id="alice", clip=str(voice_clips["alice"]), exaggeration=0.5)

    first = _engine(chatterbox_config, chatterbox_loaded, conditionals_dir=str(cache_dir))
    first.prepare_voice(voice)
    first.prepare_voice(voice)
    files = sorted(cache_dir.glob("*.pt"))
    assert len(computed) == 1 and len(files) == 1
    stamp = files[0].stat().st_mtime_ns

    second = _engine(chatterbox_config, chatterbox_loaded, conditionals_dir=str(cache_dir))
    second.prepare_voice(voice)
    # The same clip under another name is the same voice: the key is its content.
    renamed = tmp_path / "alice-copy.wav"
    shutil.copy(voice_clips["alice"], renamed)
    second.prepare_voice(dataclasses.replace(voice, clip=str(renamed)))
    assert len(computed) == 1, "a fresh engine loads the cached file instead of recomputing"
    assert files[0].stat().st_mtime_ns == stamp
    a, b = first._pristine(voice), second._pristine(voice)
    assert a is not b and bool((a.t3.speaker_emb == b.t3.speaker_emb).all())

    second.prepare_voice(dataclasses.replace(voice, exaggeration=0.9))
    assert len(computed) == 2 and len(list(cache_dir.glob("*.pt"))) == 2, "exaggeration is part of the key"


def test_two_voices_at_once_are_served_in_turn_each_with_its_own_conditionals(
    chatterbox_engine: ChatterboxEngine,
    chatterbox_loaded: LoadedChatterbox,
    voice_clips: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    voices = {name: VoiceSpec(voice_id=name, clip=str(clip)) for name, clip in voice_clips.items()}
    for voice in voices.values():
        chatterbox_engine.prepare_voice(voice)
    pristine = {name: chatterbox_engine._pristine(v) for name, v in voices.items()}
    assert not bool((pristine["alice"].t3.speaker_emb == pristine["bob"].t3.speaker_emb).all())

    model = chatterbox_loaded.model
    active, overlap, seen = [0], [0], []
    lock = threading.Lock()
    real_generate = model.generate

    def watched_generate(*args: Any, **kwargs: Any) -> Any:
        with lock:
            active[0] += 1
            overlap[0] = max(overlap[0], active[0])
            seen.append((threading.current_thread().name, model.conds))
        try:
            time.sleep(0.2)  # widen the window in which a second call could slip in
            return real_generate(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(model, "generate", watched_generate)
    computed = _spy(monkeypatch, model, "prepare_conditionals")
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def call(name: str) -> None:
        try:
            start.wait(timeout=10)
            results[name] = b"".join(chatterbox_engine.synthesize(SENTENCE, voices[name]))
        except BaseException as err:  # reported below, on the test's thread
            errors.append(err)

    threads = [threading.Thread(target=call, args=(name,), name=name) for name in voices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=THREAD_TIMEOUT)
    assert not any(t.is_alive() for t in threads) and not errors
    assert overlap[0] == 1, "one generate() at a time"
    assert len(seen) == 2 and not computed, "cached conditionals, never recomputed per request"
    for worker_name, conds in seen:
        thread_name = worker_name.removesuffix(":t3")  # a streamed sentence runs generate() on "<caller>:t3"
        mine, other = pristine[thread_name], pristine["bob" if thread_name == "alice" else "alice"]
        assert conds is not mine, "generate() gets a copy, never the cached original"
        assert bool((conds.t3.speaker_emb == mine.t3.speaker_emb).all())
        assert not bool((conds.t3.speaker_emb == other.t3.speaker_emb).all())
        assert bool((conds.gen["embedding"] == mine.gen["embedding"]).all())
    assert all(p.t3.cond_prompt_speech_emb is None for p in pristine.values()), "generate() left the cache untouched"
    assert all(len(pcm) > 0 for pcm in results.values())


def test_a_failing_sentence_raises_tts_error_and_the_next_one_is_spoken(
    chatterbox_engine: ChatterboxEngine, chatterbox_loaded: LoadedChatterbox
) -> None:
    # More text tokens than T3's position table holds (2050): an IndexError inside the library.
    too_long = "Tell me more. " * 200
    with pytest.raises(TTSError, match="chatterbox failed"):
        list(chatterbox_engine.synthesize(too_long, VoiceSpec()))
    assert not chatterbox_loaded.lock.locked()
    assert b"".join(chatterbox_engine.synthesize(SENTENCE, VoiceSpec()))


def test_a_sentence_over_its_time_limit_raises_tts_error(
    chatterbox_config: ChatterboxConfig, chatterbox_loaded: LoadedChatterbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(chatterbox_config, chatterbox_loaded, sentence_timeout_seconds=0.05)
    vocoded = _spy(monkeypatch, chatterbox_loaded.model.s3gen, "inference")
    with pytest.raises(TTSError, match="longer than 0.05 s"):
        list(engine.synthesize(SENTENCE, VoiceSpec()))
    assert vocoded == [], "stopped inside the token loop, before any audio was made"
    assert not chatterbox_loaded.lock.locked() and chatterbox_loaded.call is None


def test_hanging_up_stops_generation_without_error(chatterbox_engine: ChatterboxEngine) -> None:
    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    try:
        assert list(chatterbox_engine.synthesize(SENTENCE, VoiceSpec(), cancel)) == []
    finally:
        timer.cancel()


def test_hanging_up_while_queued_leaves_the_queue(
    chatterbox_engine: ChatterboxEngine, chatterbox_loaded: LoadedChatterbox
) -> None:
    cancel = threading.Event()
    out: list[list[bytes]] = []

    def queued_call() -> None:
        out.append(list(chatterbox_engine.synthesize(SENTENCE, VoiceSpec(), cancel)))

    with chatterbox_loaded.lock:  # someone else's sentence is being spoken
        worker = threading.Thread(target=queued_call)
        worker.start()
        time.sleep(0.3)
        cancel.set()
        worker.join(timeout=5)
    assert not worker.is_alive() and out == [[]]


def test_a_missing_voice_clip_is_a_clear_tts_error(chatterbox_engine: ChatterboxEngine, tmp_path: Path) -> None:
    voice = VoiceSpec(voice_id="ghost", clip=str(tmp_path / "ghost.wav"))
    with pytest.raises(TTSError, match="ghost.wav"):
        chatterbox_engine.prepare_voice(voice)
    with pytest.raises(TTSError, match="ghost"):
        list(chatterbox_engine.synthesize(SENTENCE, voice))
