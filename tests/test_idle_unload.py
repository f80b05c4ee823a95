"""An idle voice model is unloaded after the configured time and loaded again by the next request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from cloud_server.tts.base import TTSEngine, VoiceSpec
from cloud_server.tts.idle import IdleUnloadingEngine
from cloud_server.tts.piper_engine import LocalVoiceEngine
from common.speech import PiperLocalVoice, packaged_piper_voice
from tests.fixtures_server import TEST_KEY, server_config
from tests.ollama_standin import OllamaStandIn

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TIMEOUT = 30


def load_piper() -> TTSEngine:
    paths = packaged_piper_voice()
    assert paths is not None
    return LocalVoiceEngine(PiperLocalVoice(*paths))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unloads_after_idle_time_and_reloads_on_demand() -> None:
    clock = Clock()
    built: list[TTSEngine] = []

    def factory() -> TTSEngine:
        built.append(load_piper())
        return built[-1]

    engine = IdleUnloadingEngine(load_piper(), factory, idle_seconds=60, clock=clock, watch=False)
    first = b"".join(engine.synthesize("Hello there, caller.", VoiceSpec()))
    assert len(first) > 10000 and engine.model_resident
    clock.now += 59
    assert not engine.unload_if_idle() and engine.model_resident
    clock.now += 2
    assert engine.unload_if_idle() and not engine.model_resident
    assert not engine.unload_if_idle()  # already gone
    again = b"".join(engine.synthesize("Hello there, caller.", VoiceSpec()))
    assert len(again) > 10000 and engine.model_resident
    assert len(built) == 1 and engine.reloads == 1
    assert (engine.name, engine.sample_rate) == ("piper", built[0].sample_rate)


def test_never_unloads_in_the_middle_of_a_sentence() -> None:
    clock = Clock()
    engine = IdleUnloadingEngine(load_piper(), load_piper, idle_seconds=1, clock=clock, watch=False)
    speech: Iterator[bytes] = engine.synthesize("One sentence. And then another one after it.", VoiceSpec())
    next(speech)  # synthesis under way
    clock.now += 100
    assert not engine.unload_if_idle()
    for _ in speech:
        pass
    assert not engine.unload_if_idle()  # just used: the idle time starts again
    clock.now += 2
    assert engine.unload_if_idle()


def test_health_shows_the_unload_and_a_call_brings_the_model_back(start_server: Any, tmp_path: Path) -> None:
    with OllamaStandIn() as ollama:
        ollama.script("Good to hear from you again.")
        server = start_server(server_config(ollama.url, tmp_path, tts={"engine": "piper", "idle_unload_seconds": 0.5}))

        def resident() -> bool:
            return bool(server.health()["tts"]["model_resident"])

        deadline = time.monotonic() + 10
        while resident() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not resident()
        reply = requests.post(server.url + "/process-text", json={"text": "Hello?"}, headers=AUTH, timeout=TIMEOUT)
        assert reply.status_code == 200 and len(reply.content) > 20000
        idle = server.services.primary.engine.engine  # failure watch → phrase cache → idle unload
        # At least once: with 0.5 s of idleness allowed, a loaded machine can also unload between the
        # reply's voice preparation and its first sentence (production waits minutes, not 0.5 s).
        assert isinstance(idle, IdleUnloadingEngine) and idle.reloads >= 1


def test_concurrent_callers_after_an_unload_load_one_model() -> None:
    clock = Clock()
    built: list[TTSEngine] = []
    lock = threading.Lock()

    def factory() -> TTSEngine:
        with lock:
            built.append(load_piper())
            return built[-1]

    engine = IdleUnloadingEngine(load_piper(), factory, idle_seconds=1, clock=clock, watch=False)
    clock.now += 5
    assert engine.unload_if_idle()
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(len(b"".join(engine.synthesize("Hi there.", VoiceSpec())))))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 3 and min(results) > 5000
    assert len(built) == 1


def test_off_by_default(start_server: Any, tmp_path: Path) -> None:
    with OllamaStandIn() as ollama:
        server = start_server(server_config(ollama.url, tmp_path))
        assert not isinstance(server.services.primary.engine.engine, IdleUnloadingEngine)
        assert server.health()["tts"]["model_resident"] is True
