"""/process-audio, /characters, /voices and /metrics as a caller meets them: real HTTP, real Whisper, real Piper."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
import requests
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from cloud_server.tts.base import TTSEngine, TTSError, VoiceSpec
from common.wav import WavStreamReader, pcm16_to_float, resample_float
from tests.fixtures_server import TEST_KEY, server_config
from tests.helpers import words
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


def clip(seconds: float, rate: int = 24000, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


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
            "bad_history",
            {"files": {"audio": ("x.flac", flac, "audio/flac")}, "data": {"history": '[{"role": "system"}]'}},
            400,
            "bad_history",
        ),
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
    spec = restarted.services.characters.voice_spec("operator")
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
    assert server.services.primary.engine.hits >= 1  # served from the phrase cache, not the voice model
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


class PickyVoice(TTSEngine):
    """The real Piper voice behind a voice model that refuses short reference clips, slowly.

    A refusal waits (bounded) until another upload starts preparing its clip, so the test can
    tell whether two uploads of one id overlap: with the library lock they never do.
    """

    def __init__(self, piper: TTSEngine, min_seconds: float) -> None:
        self.piper, self.name, self.sample_rate = piper, piper.name, piper.sample_rate
        self.min_seconds = min_seconds
        self.preparing = threading.Event()
        self.overlapped = threading.Event()

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        return self.piper.synthesize(text, voice, cancel)

    def prepare_voice(self, voice: VoiceSpec) -> None:
        if voice.clip is None or not voice.clip.endswith("/shared.wav"):
            return
        if sf.info(voice.clip).duration >= self.min_seconds:
            if self.preparing.is_set():
                self.overlapped.set()
            return
        self.preparing.set()
        self.overlapped.wait(timeout=3.0)
        self.preparing.clear()
        raise TTSError("reference clip too short for this model")


def test_a_failed_upload_never_removes_a_concurrent_successful_one(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path, piper_engines: tuple[TTSEngine, TTSEngine]
) -> None:
    picky = PickyVoice(piper_engines[0], min_seconds=4.0)
    server = start_server(server_config(ollama.url, tmp_path), engines=(picky, piper_engines[1]))
    refused_clip, good_clip = encoded(clip(3.0), 24000, "WAV"), encoded(clip(6.0), 24000, "WAV")
    results: dict[str, requests.Response] = {}

    def upload(name: str, data: bytes) -> None:
        results[name] = upload_voice(server.url, "shared", data)

    refused = threading.Thread(target=upload, args=("refused", refused_clip))
    refused.start()
    assert picky.preparing.wait(timeout=TIMEOUT)  # the first upload is stored and being prepared (for 3 s)
    good = threading.Thread(target=upload, args=("good", good_clip))
    good.start()
    refused.join(timeout=TIMEOUT)
    good.join(timeout=TIMEOUT)
    assert results["refused"].status_code == 400 and results["refused"].json()["error"]["code"] == "unusable_voice"
    assert results["good"].status_code == 201, results["good"].text
    listed = requests.get(server.url + "/voices", headers=AUTH, timeout=TIMEOUT).json()["voices"]
    assert [(v["id"], v["sha256"]) for v in listed] == [("shared", results["good"].json()["sha256"])]
    assert not picky.overlapped.is_set()


def test_switching_and_deleting_a_voice_at_once_never_deletes_a_voice_in_use(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    data = encoded(clip(3.0), 24000, "WAV")
    assert upload_voice(server.url, "v", data).status_code == 201
    problems: list[str] = []

    def switcher() -> None:
        for _ in range(40):
            reply = requests.post(
                server.url + "/characters/operator/voice", json={"voice": "v"}, headers=AUTH, timeout=TIMEOUT
            )
            if reply.status_code == 200 and reply.json()["voice"] != {"source": "library", "library_voice": "v"}:
                problems.append(f"switched to v, but v was deleted: {reply.json()['voice']}")
            requests.post(
                server.url + "/characters/operator/voice", json={"voice": None}, headers=AUTH, timeout=TIMEOUT
            )

    def deleter() -> None:
        for _ in range(40):
            gone = requests.delete(server.url + "/voices/v", headers=AUTH, timeout=TIMEOUT)
            if gone.status_code == 204:
                upload_voice(server.url, "v", data)

    threads = [threading.Thread(target=switcher), threading.Thread(target=deleter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert problems == []
    characters = requests.get(server.url + "/characters", headers=AUTH, timeout=TIMEOUT).json()["characters"]
    (operator,) = [c for c in characters if c["id"] == "operator"]
    if operator["voice"]["library_voice"] == "v":
        assert operator["voice"]["source"] == "library"
    assert_still_healthy(server.url, ollama)


@pytest.mark.parametrize(("rate", "code"), [(655350, "bad_sample_rate"), (1, "bad_sample_rate")])
def test_uploads_at_absurd_rates_are_refused(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path, rate: int, code: str
) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    data = encoded(np.zeros(max(rate, 16) * 4, np.float32), rate, "FLAC" if rate > 1 else "WAV")
    for reply in (
        upload_voice(server.url, "fast", data),
        requests.post(
            server.url + "/process-audio", files={"audio": ("a", data, "audio/flac")}, headers=AUTH, timeout=TIMEOUT
        ),
    ):
        assert reply.status_code == 400 and reply.json()["error"]["code"] == code
    assert requests.get(server.url + "/voices", headers=AUTH, timeout=TIMEOUT).json()["voices"] == []


def test_the_library_refuses_more_voices_than_configured(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path, voices={"max_voices": 1}))
    assert upload_voice(server.url, "one", encoded(clip(3.0), 24000, "WAV")).status_code == 201
    full = upload_voice(server.url, "two", encoded(clip(3.0), 24000, "WAV"))
    assert full.status_code == 409 and full.json()["error"]["code"] == "library_full"
    assert upload_voice(server.url, "one", encoded(clip(4.0), 24000, "WAV")).status_code == 200


def test_a_recording_far_past_full_scale_is_heard_and_a_busy_whisper_is_503(
    ollama: OllamaStandIn, start_server: Any, tmp_path: Path, spoken_text: Speech
) -> None:
    ollama.script("Right away.")
    server = start_server(server_config(ollama.url, tmp_path, limits={"max_stt_wait_seconds": 0.2}))
    speech, rate = spoken_text(QUESTION)
    loud = encoded(speech * np.float32(1e30), rate, "WAV", "FLOAT")
    with requests.post(
        server.url + "/process-audio", files={"audio": ("q.wav", loud, "audio/wav")}, headers=AUTH, timeout=TIMEOUT
    ) as reply:
        assert reply.status_code == 200, reply.text
        assert words(unquote(reply.headers["X-Transcript"])) == words(QUESTION)
    transcriber = server.services.transcriber
    with transcriber._lock:  # Whisper busy with another caller for longer than the wait allows
        busy = requests.post(
            server.url + "/process-audio", files={"audio": ("q.wav", loud, "audio/wav")}, headers=AUTH, timeout=TIMEOUT
        )
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "busy" and "Retry-After" in busy.headers


def test_a_voice_switch_reads_json_like_every_route(ollama: OllamaStandIn, start_server: Any, tmp_path: Path) -> None:
    """Issue 14: deeply nested JSON on this route was a 500 (it had its own reader)."""
    server = start_server(server_config(ollama.url, tmp_path))
    deep = b'{"voice": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    for body in [deep, b"not json", b"[1]", b'{"other": 1}']:
        reply = requests.post(server.url + "/characters/operator/voice", data=body, timeout=TIMEOUT,
                              headers={**AUTH, "Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "bad_json", body[:20]
    assert_still_healthy(server.url, ollama)
