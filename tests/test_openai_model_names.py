"""Seed 003's model names on /v1/audio/speech: accepted and spoken by the configured model; others stay a 400."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from tests.fixtures_server import TEST_KEY, server_config
from tests.ollama_standin import OllamaStandIn

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def speak(url: str, model: str) -> requests.Response:
    body = {"model": model, "input": "Hello, this is a test.", "voice": "operator", "response_format": "pcm"}
    return requests.post(url + "/v1/audio/speech", json=body, headers=AUTH, timeout=60)


def test_seed_model_names_are_served_by_the_configured_model(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    reference = speak(server.url, "tts-1")
    assert reference.status_code == 200 and len(reference.content) > 24000  # over half a second at 24 kHz
    for model in ("chatterbox-turbo", "chatterbox-tts"):
        reply = speak(server.url, model)
        assert reply.status_code == 200, reply.text
        assert reply.content == reference.content  # the same voice model spoke it
    listed = requests.get(server.url + "/v1/models", headers=AUTH, timeout=60).json()["data"]
    assert {"chatterbox-turbo", "chatterbox-tts"} <= {m["id"] for m in listed}
    for unknown in ("chatterbox-turbo-v2", "whisper-1", "CHATTERBOX-TURBO"):
        refused = speak(server.url, unknown)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_model", unknown
