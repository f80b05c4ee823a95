"""/process-audio, /characters, /voices and /metrics as a caller meets them: real HTTP, real Whisper, real Piper."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import requests
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from common.wav import WavStreamReader, pcm16_to_float, resample_float
from tests.fixtures_server import TEST_KEY, server_config
from tests.ollama_standin import OllamaStandIn

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TIMEOUT = 60
QUESTION = "What time does the last train leave for the station?"
Speech = Callable[[str], tuple[np.ndarray, int]]


def encoded(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    if fmt == "OGG":  # Opus takes 48 kHz, not Piper's 22.05 kHz
        samples, rate = resample_float(samples, rate, 48000), 48000
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


def spoken_seconds(response: requests.Response) -> tuple[int, float]:
    reader = WavStreamReader()
    pcm = b"".join(reader.feed(chunk) for chunk in response.iter_content(chunk_size=None))
    assert reader.format is not None
    samples = pcm16_to_float(pcm)
    return reader.format.sample_rate, float((np.abs(samples) > 0.01).sum() / reader.format.sample_rate)


def assert_still_healthy(url: str, ollama: OllamaStandIn) -> None:
    assert requests.get(url + "/health", timeout=TIMEOUT).status_code == 200
    ollama.script("Yes, I am still here.")
    with requests.post(url + "/process-text", json={"text": "Hello?"}, headers=AUTH, stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200
        assert spoken_seconds(r)[1] > 0.3


@pytest.mark.parametrize(
    ("how", "fmt", "subtype", "mime"),
    [
        ("multipart", "WAV", "PCM_16", "audio/wav"),
        ("multipart", "MP3", "MPEG_LAYER_III", "audio/mpeg"),
        ("raw", "FLAC", "PCM_16", "audio/flac"),
        ("raw", "OGG", "OPUS", "audio/ogg"),
    ],
)
def test_a_recording_gets_the_same_spoken_reply_as_text(
    ollama: OllamaStandIn,
    start_server: Any,
    tmp_path: Path,
    spoken_text: Speech,
    how: str,
    fmt: str,
    subtype: str,
    mime: str,
) -> None:
    ollama.script("The last train leaves at eleven. ", "Please do not miss it.")
    server = start_server(server_config(ollama.url, tmp_path))
    data = encoded(*spoken_text(QUESTION), fmt, subtype)
    if how == "multipart":
        kwargs: dict[str, Any] = {
            "files": {"audio": ("question", data, mime)},
            "data": {"session_id": "call-1", "character": "operator"},
        }
    else:
        kwargs = {"data": data, "headers": {**AUTH, "Content-Type": mime}, "params": {"session_id": "call-1"}}
    kwargs.setdefault("headers", AUTH)
    with requests.post(server.url + "/process-audio", stream=True, timeout=TIMEOUT, **kwargs) as reply:
        assert reply.status_code == 200, reply.text
        assert reply.headers["Content-Type"] == "audio/wav"
        assert reply.headers["X-Session-Id"] == "call-1"
        transcript = unquote(reply.headers["X-Transcript"])
        assert "stt;dur=" in reply.headers["Server-Timing"]
        rate, seconds = spoken_seconds(reply)
    assert words(transcript) == words(QUESTION)
    assert rate == server.services.pipeline.sample_rate and seconds > 1.0
    (chat,) = ollama.chat_requests()
    assert chat.messages[-1] == {"role": "user", "content": transcript}
    session = requests.get(server.url + "/sessions/call-1", headers=AUTH, timeout=TIMEOUT).json()
    assert session["last_transcript"] == transcript
    assert session["last_reply"] == "The last train leaves at eleven. Please do not miss it."


def bad_uploads(spoken_text: Speech) -> list[tuple[str, dict[str, Any], int, str]]:
    speech, rate = spoken_text(QUESTION)
    flac = encoded(speech, rate, "FLAC", "PCM_16")
    return [
        (
            "garbage",
            {"files": {"audio": ("x.wav", b"this is not audio, just text" * 20, "audio/wav")}},
            415,
            "unsupported_audio",
        ),
        ("truncated", {"files": {"audio": ("x.flac", flac[:400], "audio/flac")}}, 400, "bad_audio"),
        (
            "silence",
            {"files": {"audio": ("x.wav", encoded(np.zeros(32000, np.float32), 16000, "WAV"), "audio/wav")}},
            400,
            "no_speech",
        ),
        (
            "too_long",
            {"files": {"audio": ("x.wav", encoded(np.tile(speech, 6), rate, "WAV"), "audio/wav")}},
            413,
            "audio_too_large",
        ),
        ("too_big", {"files": {"audio": ("x.wav", b"RIFF" + b"\x01" * 600_000, "audio/wav")}}, 413, "audio_too_large"),
        ("no_field", {"files": {"sound": ("x.flac", flac, "audio/flac")}}, 400, "missing_audio"),
        (
            "text_body",
            {"data": b"hello", "headers": {**AUTH, "Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ("no_key", {"files": {"audio": ("x.flac", flac, "audio/flac")}, "headers": {}}, 401, "missing_key"),
        (
            "unknown_character",
            {"files": {"audio": ("x.flac", flac, "audio/flac")}, "data": {"character": "ghost"}},
            404,
            "unknown_character",
        ),
    ]


def test_bad_recordings_are_refused_and_the_server_stays_healthy(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path, spoken_text: Speech
) -> None:
    server = start_server(
        server_config(ollama.url, tmp_path, limits={"max_audio_bytes": 500_000, "max_audio_seconds": 12.0})
    )
    for name, kwargs, status, code in bad_uploads(spoken_text):
        kwargs.setdefault("headers", AUTH)
        reply = requests.post(server.url + "/process-audio", timeout=TIMEOUT, **kwargs)
        assert (name, reply.status_code) == (name, status), reply.text
        assert reply.json()["error"]["code"] == code, name
    assert ollama.chat_requests() == []
    assert_still_healthy(server.url, ollama)


def upload_voice(url: str, voice_id: str, data: bytes, mime: str = "audio/wav") -> requests.Response:
    return requests.post(
        url + "/voices", files={"audio": ("clip", data, mime)}, data={"id": voice_id}, headers=AUTH, timeout=TIMEOUT
    )


def test_voice_library_and_character_switch_survive_a_restart(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path, spoken_text: Speech
) -> None:
    config = server_config(ollama.url, tmp_path)
    server = start_server(config)
    clip = encoded(
        *spoken_text("Ahoy there. This is the voice of the captain, recorded on deck."), "MP3", "MPEG_LAYER_III"
    )
    created = upload_voice(server.url, "captain", clip, "audio/mpeg")
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "captain" and created.json()["seconds"] > 2
    assert upload_voice(server.url, "captain", clip, "audio/mpeg").json()["changed"] is False
    listed = requests.get(server.url + "/voices", headers=AUTH, timeout=TIMEOUT).json()
    assert [v["id"] for v in listed["voices"]] == ["captain"]

    switched = requests.post(
        server.url + "/characters/operator/voice", json={"voice": "captain"}, headers=AUTH, timeout=TIMEOUT
    )
    assert switched.status_code == 200 and switched.json()["voice"] == {"source": "library", "library_voice": "captain"}
    # A restart (new app on the same data directory) keeps both the clip and the switch.
    restarted = start_server(config)
    characters = requests.get(restarted.url + "/characters", headers=AUTH, timeout=TIMEOUT).json()
    (operator,) = [c for c in characters["characters"] if c["id"] == "operator"]
    assert operator["voice"] == {"source": "library", "library_voice": "captain"}
    assert operator["ignored_parameters"] == ["voice_clip", "exaggeration", "cfg_weight", "temperature"]  # Piper
    spec = restarted.services.voice_for("operator", restarted.services.config.server.characters["operator"])
    assert spec.clip == str(tmp_path / "data" / "voices" / "captain.wav")

    in_use = requests.delete(restarted.url + "/voices/captain", headers=AUTH, timeout=TIMEOUT)
    assert in_use.status_code == 409 and "operator" in in_use.json()["error"]["message"]
    back = requests.post(
        restarted.url + "/characters/operator/voice", json={"voice": None}, headers=AUTH, timeout=TIMEOUT
    )
    assert back.json()["voice"]["source"] in ("builtin", "default", "character")
    assert requests.delete(restarted.url + "/voices/captain", headers=AUTH, timeout=TIMEOUT).status_code == 204
    assert requests.delete(restarted.url + "/voices/captain", headers=AUTH, timeout=TIMEOUT).status_code == 404
    assert_still_healthy(restarted.url, ollama)


def test_bad_voice_uploads_are_refused(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path, spoken_text: Speech
) -> None:
    server = start_server(server_config(ollama.url, tmp_path, voices={"max_upload_bytes": 400_000}))
    speech, rate = spoken_text(QUESTION)
    good = encoded(speech, rate, "FLAC", "PCM_16")
    cases = [
        ("../../etc/passwd", good, 400, "bad_voice_id"),
        ("Captain", good, 400, "bad_voice_id"),
        ("operator", good, 409, "name_taken"),
        ("short", encoded(speech[: rate // 2], rate, "WAV"), 400, "bad_audio"),
        ("junk", b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000, 415, "unsupported_audio"),
        ("huge", encoded(np.tile(speech, 5), rate, "WAV"), 413, "audio_too_large"),
    ]
    for voice_id, data, status, code in cases:
        reply = upload_voice(server.url, voice_id, data)
        assert (voice_id, reply.status_code, reply.json()["error"]["code"]) == (voice_id, status, code)
    assert requests.get(server.url + "/voices", headers=AUTH, timeout=TIMEOUT).json()["voices"] == []
    assert list((tmp_path / "data" / "voices").iterdir()) == []
    for path in ["/voices/..%2F..%2Fetc", "/voices/UPPER"]:
        assert requests.delete(server.url + path, headers=AUTH, timeout=TIMEOUT).status_code in (400, 404)
    unknown = requests.post(
        server.url + "/characters/operator/voice", json={"voice": "nobody"}, headers=AUTH, timeout=TIMEOUT
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_voice"
    assert requests.get(server.url + "/voices", timeout=TIMEOUT).status_code == 401
    assert_still_healthy(server.url, ollama)


def test_greeting_is_synthesized_once(ollama: OllamaStandIn, start_server: Any, tmp_path: Path) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    first = requests.get(server.url + "/characters/operator/greeting", headers=AUTH, timeout=TIMEOUT)
    assert first.status_code == 200 and first.headers["Content-Type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(first.content))
    assert rate == server.services.pipeline.sample_rate and samples.size / rate > 1.0
    assert float(first.headers["X-Audio-Duration"]) == pytest.approx(samples.size / rate, abs=0.01)
    second = requests.get(server.url + "/characters/operator/greeting", headers=AUTH, timeout=TIMEOUT)
    assert second.content == first.content
    assert server.services.primary.hits >= 1  # served from the phrase cache, not the voice model
    assert requests.get(server.url + "/characters/ghost/greeting", headers=AUTH, timeout=TIMEOUT).status_code == 404


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url + "/metrics", headers=AUTH, timeout=TIMEOUT).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_turns_and_requests(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path, spoken_text: Speech
) -> None:
    ollama.script("Certainly, right away.")
    server = start_server(server_config(ollama.url, tmp_path))
    data = encoded(*spoken_text(QUESTION), "WAV", "PCM_16")
    with requests.post(
        server.url + "/process-audio",
        files={"audio": ("q.wav", data, "audio/wav")},
        headers=AUTH,
        stream=True,
        timeout=TIMEOUT,
    ) as reply:
        spoken_seconds(reply)
    requests.post(server.url + "/process-text", json={}, headers=AUTH, timeout=TIMEOUT)
    got = metric_samples(server.url)
    assert got[("ai_telephone_requests_total", (("route", "/process-audio"), ("status", "200")))] == 1
    assert got[("ai_telephone_requests_total", (("route", "/process-text"), ("status", "400")))] == 1
    assert got[("ai_telephone_stt_seconds_count", ())] == 1
    assert got[("ai_telephone_llm_first_token_seconds_count", ())] == 1
    assert got[("ai_telephone_time_to_first_audio_seconds_count", ())] == 1
    assert got[("ai_telephone_tts_sentence_seconds_count", ())] >= 1
    assert got[("ai_telephone_tts_real_time_factor_count", ())] == 1
    assert requests.get(server.url + "/metrics", timeout=TIMEOUT).status_code == 401


def test_a_recording_is_refused_before_transcription_when_every_slot_is_busy(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path, spoken_text: Speech
) -> None:
    ollama.script("Hold the line, this first sentence is long enough. ", 3.0, "Thanks for waiting.")
    server = start_server(server_config(ollama.url, tmp_path, limits={"queue_depth": 1, "retry_after_seconds": 5}))
    data = encoded(*spoken_text(QUESTION), "WAV", "PCM_16")
    with requests.post(
        server.url + "/process-text", json={"text": "first caller"}, headers=AUTH, stream=True, timeout=TIMEOUT
    ) as first:
        chunks = first.iter_content(chunk_size=None)
        next(chunks)  # admitted and streaming
        busy = requests.post(
            server.url + "/process-audio", files={"audio": ("q.wav", data, "audio/wav")}, headers=AUTH, timeout=TIMEOUT
        )
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        assert busy.json()["error"]["code"] == "busy"
        for _ in chunks:
            pass
    got = metric_samples(server.url)
    assert got[("ai_telephone_stt_seconds_count", ())] == 0
    assert got[("ai_telephone_queue_rejections_total", ())] == 1
