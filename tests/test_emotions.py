"""Emotion profiles (seed 004) as a caller meets them: real HTTP, the real Piper voice, the data dir on disk.

Piper ignores the knobs, so the voice model here is Piper behind a listener at the TTS seam that
notes which voice each sentence and each preparation asked for: what Chatterbox would be told.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf

from cloud_server.tts.base import TTSEngine, VoiceSpec
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TIMEOUT = 60
Speech = Callable[[str], tuple[np.ndarray, int]]


class ListeningVoice(TTSEngine):
    """The real Piper voice, noting the VoiceSpec of every sentence spoken and every voice prepared."""

    def __init__(self, piper: TTSEngine) -> None:
        self.piper, self.name, self.sample_rate = piper, piper.name, piper.sample_rate
        self.spoken: list[VoiceSpec] = []
        self.prepared: list[VoiceSpec] = []
        self._lock = threading.Lock()

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        with self._lock:
            self.spoken.append(voice)
        return self.piper.synthesize(text, voice, cancel)

    def prepare_voice(self, voice: VoiceSpec) -> None:
        with self._lock:
            self.prepared.append(voice)


@pytest.fixture
def listening(piper_engines: tuple[TTSEngine, TTSEngine]) -> tuple[ListeningVoice, TTSEngine]:
    return ListeningVoice(piper_engines[0]), piper_engines[1]


def call(server: RunningServer, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, server.url + path, json=body, headers=AUTH, timeout=TIMEOUT)


def wav_clip(spoken_text: Speech, text: str) -> bytes:
    samples, rate = spoken_text(text)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def upload(server: RunningServer, emotion_id: str, data: bytes, **fields: str) -> requests.Response:
    return requests.post(
        f"{server.url}/emotions/{emotion_id}/voices", files={"audio": ("clip.wav", data, "audio/wav")},
        data=fields, headers=AUTH, timeout=TIMEOUT,
    )


def test_profiles_are_created_listed_changed_and_deleted(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    made = call(server, "POST", "/emotions", {
        "character": "operator", "name": "Cheerful", "description": "Bright and quick.", "exaggeration": 1.2,
    })
    assert made.status_code == 201, made.text
    cheerful = made.json()
    assert cheerful | {"created": "", "updated": ""} == {
        "id": "operator-cheerful", "character": "operator", "name": "Cheerful", "description": "Bright and quick.",
        "exaggeration": 1.2, "temperature": 0.8, "cfg_weight": 0.5, "voices": [], "created": "", "updated": "",
    }  # the knobs not sent are the character's
    assert cheerful["created"] == cheerful["updated"] and cheerful["created"].endswith("+00:00")
    assert call(server, "POST", "/emotions", {"character": "operator", "name": "Gloomy", "id": "gloom",
                                              "temperature": 0.4}).status_code == 201
    listing = call(server, "GET", "/emotions?character=operator").json()["emotions"]
    assert [e["id"] for e in listing] == ["operator-cheerful", "gloom"]

    changed = call(server, "PUT", "/emotions/gloom", {"description": "Low and slow.", "cfg_weight": 0.2})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["description"], changed.json()["cfg_weight"], changed.json()["temperature"]) == (
        "Low and slow.", 0.2, 0.4)
    assert call(server, "GET", "/emotions/gloom").json() == changed.json()
    assert call(server, "DELETE", "/emotions/gloom").status_code == 204
    assert call(server, "GET", "/emotions/gloom").status_code == 404
    assert [e["id"] for e in call(server, "GET", "/emotions").json()["emotions"]] == ["operator-cheerful"]

    heard = call(server, "POST", "/emotions/operator-cheerful/test", {"text": "What a lovely morning it is."})
    assert heard.status_code == 200 and heard.headers["Content-Type"] == "audio/wav", heard.text
    samples, _ = sf.read(io.BytesIO(heard.content), dtype="float32")
    assert float(heard.headers["X-Audio-Duration"]) > 1.0 and np.abs(samples).max() > 0.05
    assert call(server, "POST", "/emotions/operator-cheerful/test").status_code == 200  # a stock line


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/emotions", {"character": "operator", "name": "x", "id": "Bad Id"}, 400, "bad_emotion_id"),
        ("POST", "/emotions", {"character": "operator", "name": "x", "id": "ok\n"}, 400, "bad_emotion_id"),
        ("POST", "/emotions", {"character": "operator", "name": "Calm"}, 409, "emotion_conflict"),
        ("POST", "/emotions", {"character": "operator", "name": "calm", "id": "other"}, 409, "emotion_conflict"),
        ("POST", "/emotions", {"character": "ghost", "name": "x"}, 404, "unknown_character"),
        ("POST", "/emotions", {"name": "x"}, 400, "missing_field"),
        ("POST", "/emotions", {"character": "operator", "name": " "}, 400, "empty_field"),
        ("POST", "/emotions", {"character": "operator", "name": "x", "exaggeration": 3}, 400, "out_of_range"),
        ("POST", "/emotions", {"character": "operator", "name": "x", "temperature": "hot"}, 400, "bad_field"),
        ("POST", "/emotions", {"character": "operator", "name": "x", "description": "d" * 501}, 413, "text_too_long"),
        ("POST", "/emotions", {"character": "operator", "name": "x", "mood": 1}, 400, "unknown_field"),
        ("POST", "/emotions", {"character": "operator", "name": "x", "voices": ["nobody"]}, 404, "unknown_voice"),
        ("POST", "/emotions", {"character": "operator", "name": "x", "voices": ["../x"]}, 400, "bad_voice_id"),
        ("PUT", "/emotions/operator-calm", {"character": "other"}, 400, "bad_field"),
        ("PUT", "/emotions/ghost", {"name": "x"}, 404, "unknown_emotion"),
        ("DELETE", "/emotions/ghost", None, 404, "unknown_emotion"),
        ("POST", "/emotions/ghost/test", None, 404, "unknown_emotion"),
        ("POST", "/emotions/operator-calm/test", {"text": "🙂"}, 400, "nothing_to_say"),
        ("GET", "/emotions?character=ghost", None, 404, "unknown_character"),
    ],
)
def test_bad_profile_requests_get_json_errors_and_change_nothing(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path,
    method: str, path: str, body: Any, status: int, code: str,
) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    assert call(server, "POST", "/emotions", {"character": "operator", "name": "Calm"}).status_code == 201
    before = call(server, "GET", "/emotions").json()
    answer = call(server, method, path, body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert call(server, "GET", "/emotions").json() == before
    assert requests.get(server.url + "/emotions", timeout=TIMEOUT).status_code == 401


def test_a_turn_speaks_with_the_emotion_its_own_clip_and_the_request_knobs(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path,
    listening: tuple[ListeningVoice, TTSEngine], spoken_text: Speech,
) -> None:
    voice = listening[0]
    server = start_server(server_config(ollama.url, tmp_path), engines=listening)
    made = call(server, "POST", "/emotions", {"character": "operator", "name": "Excited", "exaggeration": 1.6,
                                               "temperature": 1.1, "cfg_weight": 0.3})
    assert made.status_code == 201
    assert voice.prepared[-1].exaggeration == 1.6  # prepared on save, before any call needs it
    clip = wav_clip(spoken_text, "Oh wow, this is the most exciting news I have heard all week!")
    uploaded = upload(server, "operator-excited", clip)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["voice"]["id"] == "operator-excited-1"
    assert uploaded.json()["emotion"]["voices"] == ["operator-excited-1"]
    own_clip = str(tmp_path / "data" / "voices" / "operator-excited-1.wav")
    assert (voice.prepared[-1].clip, voice.prepared[-1].exaggeration) == (own_clip, 1.6)

    def spoken_with(body: dict[str, Any]) -> VoiceSpec:
        calls.append(body)  # a new reply text each time: the phrase cache never answers for the voice
        ollama.script(f"Well hello there, caller number {len(calls)}. ", "How nice of you to call.")
        voice.spoken.clear()
        reply = call(server, "POST", "/process-text", {"text": "Hi!", **body})
        assert reply.status_code == 200, reply.text
        assert len(reply.content) > 10_000
        assert voice.spoken and len(set(voice.spoken)) == 1
        return voice.spoken[0]

    calls: list[dict[str, Any]] = []
    plain = spoken_with({})
    assert (plain.exaggeration, plain.clip) == (0.5, None)
    excited = spoken_with({"emotion": "excited"})  # by name, any case
    assert (excited.exaggeration, excited.temperature, excited.cfg_weight, excited.clip) == (1.6, 1.1, 0.3, own_clip)
    tuned = spoken_with({"emotion": "operator-excited", "temperature": 0.3, "exaggeration": 0.9})
    assert (tuned.exaggeration, tuned.temperature, tuned.cfg_weight) == (0.9, 0.3, 0.3)

    for body, status, code in [
        ({"emotion": "furious"}, 404, "unknown_emotion"),
        ({"emotion": 1.5}, 400, "bad_emotion"),
        ({"temperature": 9}, 400, "out_of_range"),
        ({"cfg_weight": "high"}, 400, "bad_field"),
    ]:
        refused = call(server, "POST", "/process-text", {"text": "Hi!", **body})
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), body
    assert server.slots_in_use() == 0

    voice.spoken.clear()
    speech = call(server, "POST", "/v1/audio/speech", {"model": "tts-1", "input": "Hooray, it worked!",
                                                        "voice": "operator", "emotion": "Excited",
                                                        "response_format": "wav"})
    assert speech.status_code == 200 and voice.spoken[0].clip == own_clip and voice.spoken[0].exaggeration == 1.6
    for body, code in [({"voice": "operator", "emotion": "furious"}, "unknown_emotion"),
                       ({"voice": "operator-excited-1", "emotion": "Excited"}, "bad_emotion"),
                       ({"voice": "operator", "exaggeration": 0.1}, "out_of_range")]:
        refused = call(server, "POST", "/v1/audio/speech", {"model": "tts-1", "input": "Hi.", **body})
        assert refused.json()["error"]["code"] == code, body
    library_tuned = call(server, "POST", "/v1/audio/speech", {"model": "tts-1", "input": "Steady now.",
                                                               "voice": "operator-excited-1", "temperature": 0.2,
                                                               "response_format": "wav"})
    assert library_tuned.status_code == 200 and voice.spoken[-1].temperature == 0.2

    plain_file = call(server, "POST", "/generate-audio", {"text": "The bus is late."}).json()
    excited_file = call(server, "POST", "/generate-audio", {"text": "The bus is late.", "emotion": "excited"}).json()
    assert excited_file["audio_url"] != plain_file["audio_url"] and voice.spoken[-1].clip == own_clip
    unknown = call(server, "POST", "/generate-audio", {"text": "The bus is late.", "emotion": "sleepy"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_emotion"


def test_profiles_and_their_clips_survive_a_restart_and_guard_their_clips(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path,
    listening: tuple[ListeningVoice, TTSEngine], spoken_text: Speech,
) -> None:
    config = server_config(ollama.url, tmp_path)
    server = start_server(config)
    assert call(server, "POST", "/characters", {"id": "luna", "display_name": "Luna"}).status_code == 201
    assert call(server, "POST", "/emotions", {"character": "luna", "name": "Dreamy", "id": "dreamy",
                                              "exaggeration": 0.3}).status_code == 201
    clip = wav_clip(spoken_text, "The moon is out and the night is very quiet tonight.")
    assert upload(server, "dreamy", clip, id="moon-whisper").status_code == 201
    assert upload(server, "dreamy", b"not audio at all" * 100).status_code == 415
    taken = upload(server, "dreamy", clip, id="luna")
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "name_taken")
    in_use = call(server, "DELETE", "/voices/moon-whisper")
    assert in_use.status_code == 409 and "emotion dreamy" in in_use.json()["error"]["message"]

    preview = requests.get(server.url + "/voices/moon-whisper/audio", headers=AUTH, timeout=TIMEOUT)
    assert preview.status_code == 200 and preview.headers["Content-Type"] == "audio/wav"
    assert sf.info(io.BytesIO(preview.content)).samplerate == 24000
    assert requests.get(server.url + "/voices/moon-whisper/audio", timeout=TIMEOUT).status_code == 401
    assert call(server, "GET", "/voices/nobody/audio").status_code == 404

    restarted = start_server(config, engines=listening)  # a new app on the same data directory
    dreamy = call(restarted, "GET", "/emotions/dreamy").json()
    assert (dreamy["character"], dreamy["exaggeration"], dreamy["voices"]) == ("luna", 0.3, ["moon-whisper"])
    own_clip = str(tmp_path / "data" / "voices" / "moon-whisper.wav")
    assert any(s.clip == own_clip and s.exaggeration == 0.3 for s in listening[0].prepared)  # prepared at start
    assert not list((tmp_path / "data").glob(".emotions.json.*"))  # no debris from the atomic writes

    assert call(restarted, "DELETE", "/characters/luna").status_code == 204
    assert call(restarted, "GET", "/emotions").json()["emotions"] == []  # a character's profiles go with it
    assert call(restarted, "DELETE", "/voices/moon-whisper").status_code == 204  # free again


def test_an_unreadable_profiles_file_stops_the_start_instead_of_being_overwritten(tmp_path: Path) -> None:
    from cloud_server.library.emotions import EmotionStore
    from common.config import ConfigError

    store = EmotionStore.in_data_dir(tmp_path)
    assert store.load() == {}
    for content in ("{not json", '{"emotions": [{"id": "../x"}]}', '{"emotions": 3}'):
        store.path.write_text(content, encoding="utf-8")
        with pytest.raises(ConfigError, match="emotions.json"):
            store.load()
        assert store.path.read_text(encoding="utf-8") == content  # someone's work, left alone
