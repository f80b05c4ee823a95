"""The server with the real Chatterbox engine (random-weight checkpoint of the true architecture)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import requests

from cloud_server.tts.piper_engine import LocalVoiceEngine
from tests.fixtures_server import TEST_KEY, server_config
from tests.fixtures_tts import TEST_MAX_TOKENS
from tests.ollama_standin import OllamaStandIn
from tests.test_server_api import spoken

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def test_two_callers_with_different_voices_both_hear_chatterbox_at_24khz(
    start_server: Any, tmp_path: Path, batched_engine: Any, local_voice: Any, voice_clips: dict[str, Path]
) -> None:
    chatterbox_engine = batched_engine  # as in production: the two callers' sentences decode in one T3 batch
    characters = {
        name: {"persona": f"You are {name}.", "voice_clip": str(clip)} for name, clip in voice_clips.items()
    }
    with OllamaStandIn() as ollama:
        ollama.script("Hello there, nice to hear from you.")
        config = server_config(ollama.url, tmp_path, tts={"engine": "chatterbox"}, characters=characters,
                               default_character="alice")
        fallback = LocalVoiceEngine(local_voice, sample_rate=chatterbox_engine.sample_rate)
        server = start_server(config, engines=(chatterbox_engine, fallback))
        health = server.health()
        assert health["tts"]["engine"] == "chatterbox" and health["tts"]["degraded"] is False

        turns: list[Any] = []
        server.services.pipeline.listeners.append(turns.append)
        results: dict[str, tuple[int, int, str, int]] = {}

        def call(name: str) -> None:
            with requests.post(server.url + "/process-text", json={"text": "Hi!", "character": name},
                               headers=AUTH, stream=True, timeout=300) as reply:
                rate, samples = spoken(reply)
                results[name] = (reply.status_code, rate, reply.headers["X-Character"], len(samples))

        threads = [threading.Thread(target=call, args=(name,)) for name in characters]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    for name in characters:
        status, rate, character, n_samples = results[name]
        assert (status, rate, character) == (200, 24000, name)
        # Chatterbox speaks 40 ms (960 samples) per speech token; the test budget is at most 20 tokens.
        assert 0 < n_samples <= TEST_MAX_TOKENS * 960 * 1.25
    # Both replies came from Chatterbox itself, not from the fallback voice.
    assert len(turns) == 2 and all(t.fallback_sentences == 0 and t.engine == "chatterbox" for t in turns)
    assert chatterbox_engine.loaded.batcher.stats.largest_batch == 2, "both callers decoded in one batch"
