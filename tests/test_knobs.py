"""A request's own voice knobs: max_tokens beside the others, and emotion and knobs on /process-audio too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from cloud_server.tts.base import TTSEngine, VoiceSpec
from cloud_server.tts.chatterbox_engine import ChatterboxEngine
from cloud_server.tts.chatterbox_plan import SAMPLES_PER_TOKEN, token_budget
from tests.fixtures_server import RunningServer, server_config
from tests.ollama_standin import OllamaStandIn
from tests.test_emotions import AUTH, TIMEOUT, ListeningVoice, Speech, call, wav_clip

QUESTION = "What time does the last train leave tonight?"


@pytest.fixture
def listening(piper_engines: tuple[TTSEngine, TTSEngine]) -> tuple[ListeningVoice, TTSEngine]:
    return ListeningVoice(piper_engines[0]), piper_engines[1]


def test_max_tokens_rides_with_each_request_and_is_bounded(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path,
    listening: tuple[ListeningVoice, TTSEngine],
) -> None:
    voice = listening[0]
    server = start_server(server_config(ollama.url, tmp_path), engines=listening)
    ollama.script("The train leaves at eleven. ", "Do not miss it.")
    reply = call(server, "POST", "/process-text", {"text": "When?", "max_tokens": 40, "temperature": 0.3})
    assert reply.status_code == 200 and len(reply.content) > 10_000
    assert {(s.max_tokens, s.temperature) for s in voice.spoken} == {(40, 0.3)}
    speech = call(server, "POST", "/v1/audio/speech", {"model": "tts-1", "input": "Hooray, it worked!",
                                                        "voice": "operator", "max_tokens": 250,
                                                        "response_format": "wav"})
    assert speech.status_code == 200 and voice.spoken[-1].max_tokens == 250
    plain = call(server, "POST", "/v1/audio/speech", {"model": "tts-1", "input": "Plain again.", "voice": "operator",
                                                       "response_format": "wav"})
    assert plain.status_code == 200 and voice.spoken[-1].max_tokens is None  # the engine's own budget

    for value in (0, 1001, 2.5, "many", True):
        for path, body in (("/process-text", {"text": "Hi!"}),
                           ("/v1/audio/speech", {"model": "tts-1", "input": "Hi.", "voice": "operator"})):
            refused = call(server, "POST", path, {**body, "max_tokens": value})
            assert refused.status_code == 400, (path, value)
            assert refused.json()["error"]["code"] in ("out_of_range", "bad_field")
            assert "'max_tokens' must be a whole number from 1 to 1000" in refused.json()["error"]["message"]
    assert server.slots_in_use() == 0


def test_a_recording_can_ask_for_an_emotion_and_knobs_as_form_fields(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path,
    listening: tuple[ListeningVoice, TTSEngine], spoken_text: Speech,
) -> None:
    voice = listening[0]
    server = start_server(server_config(ollama.url, tmp_path), engines=listening)
    made = call(server, "POST", "/emotions", {"character": "operator", "name": "Sleepy", "exaggeration": 0.3,
                                               "temperature": 0.6})
    assert made.status_code == 201
    recording = wav_clip(spoken_text, QUESTION)

    def ask(fields: dict[str, str]) -> requests.Response:
        return requests.post(server.url + "/process-audio", files={"audio": ("q.wav", recording, "audio/wav")},
                             data=fields, headers=AUTH, timeout=TIMEOUT)

    ollama.script("It leaves at eleven, dear. ", "Sleep well.")
    reply = ask({"emotion": "sleepy", "cfg_weight": "0.2", "max_tokens": "64"})
    assert reply.status_code == 200, reply.text
    assert "last train" in reply.headers["X-Transcript"].replace("%20", " ").lower()
    spoken = set(voice.spoken)
    assert {(s.exaggeration, s.temperature, s.cfg_weight, s.max_tokens) for s in spoken} == {(0.3, 0.6, 0.2, 64)}

    for fields, status, code in [
        ({"exaggeration": "loud"}, 400, "bad_field"),
        ({"max_tokens": "1.5"}, 400, "bad_field"),
        ({"temperature": "9"}, 400, "out_of_range"),
        ({"emotion": "furious"}, 404, "unknown_emotion"),
    ]:
        refused = ask(fields)
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), fields
    assert len(ollama.chat_requests()) == 1  # refused before any reply was started
    assert server.slots_in_use() == 0


def test_chatterbox_stops_each_sentence_at_the_requests_max_tokens(chatterbox_engine: ChatterboxEngine) -> None:
    cap = 3
    sentence = "Hello there, this is the operator."
    cfg = chatterbox_engine.cfg
    assert token_budget(len(sentence), cfg.max_tokens_per_char, cfg.min_tokens, cfg.max_tokens) > cap
    capped = b"".join(chatterbox_engine.synthesize(sentence, VoiceSpec(max_tokens=cap)))
    assert 0 < len(capped) // 2 <= cap * SAMPLES_PER_TOKEN
