"""The OpenAI-compatible speech API, called with the official ``openai`` client as users' tools call it."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import requests
import soundfile as sf

from cloud_server.tts.base import TTSEngine, VoiceSpec
from tests.fixtures_server import TEST_KEY, server_config
from tests.ollama_standin import OllamaStandIn

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TEXT = "Good evening. This is your wake-up call, as requested. Have a lovely day."
TIMEOUT = 60


@pytest.fixture
def server(start_server: Any, tmp_path: Path) -> Iterator[Any]:
    with OllamaStandIn() as ollama:
        yield start_server(server_config(ollama.url, tmp_path))


@pytest.fixture
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=TEST_KEY, timeout=TIMEOUT, max_retries=0)


def decode(data: bytes, response_format: str) -> tuple[np.ndarray, int]:
    if response_format == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, 24000
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return samples, rate


@pytest.mark.parametrize("response_format", ["mp3", "opus", "flac", "wav", "pcm"])
def test_each_format_round_trips_through_the_openai_client(client: openai.OpenAI, response_format: str) -> None:
    reply = client.audio.speech.create(
        model="tts-1",
        voice="operator",
        input=TEXT,
        response_format=response_format,  # type: ignore[arg-type]
    )
    samples, rate = decode(reply.content, response_format)
    assert rate == 24000
    assert 2.0 < samples.size / rate < 15.0
    assert float(np.abs(samples).max()) > 0.1  # speech, not silence
    expected_type = {
        "mp3": "audio/mpeg",
        "opus": "audio/ogg",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
    }[response_format]
    assert reply.response.headers["content-type"] == expected_type


def test_mp3_is_the_default_and_reports_its_timing(server: Any) -> None:
    reply = requests.post(
        server.url + "/v1/audio/speech",
        json={"model": "tts-1", "voice": "operator", "input": TEXT},
        headers=AUTH,
        timeout=TIMEOUT,
    )
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "audio/mpeg"
    samples, rate = sf.read(io.BytesIO(reply.content))
    assert float(reply.headers["X-Audio-Duration"]) == pytest.approx(samples.size / rate, abs=0.1)
    assert float(reply.headers["X-Generation-Time"]) > 0
    assert "tts;dur=" in reply.headers["Server-Timing"]


def test_speed_changes_the_length(client: openai.OpenAI) -> None:
    lengths = {}
    for speed in (0.5, 1.0, 2.0):
        reply = client.audio.speech.create(
            model="tts-1", voice="operator", input=TEXT, response_format="wav", speed=speed
        )
        samples, rate = decode(reply.content, "wav")
        lengths[speed] = samples.size / rate
    assert lengths[2.0] == pytest.approx(lengths[1.0] / 2, rel=0.1)
    assert lengths[0.5] == pytest.approx(lengths[1.0] * 2, rel=0.1)


def test_streamed_wav_arrives_in_pieces(client: openai.OpenAI) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="operator", input=TEXT, response_format="wav"
    ) as reply:
        chunks = list(reply.iter_bytes())
    data = b"".join(chunks)
    assert data[:4] == b"RIFF" and len(chunks) >= 2
    samples, rate = decode(data, "wav")
    assert rate == 24000 and samples.size / rate > 2.0


def test_sse_stream(server: Any) -> None:
    for fmt in ("pcm", "mp3"):
        body = {
            "model": "gpt-4o-mini-tts",
            "voice": "operator",
            "input": TEXT,
            "response_format": fmt,
            "stream_format": "sse",
        }
        with requests.post(
            server.url + "/v1/audio/speech", json=body, headers=AUTH, stream=True, timeout=TIMEOUT
        ) as reply:
            assert reply.headers["Content-Type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith(b"data: ")]
        assert events[-1]["type"] == "speech.audio.done"
        deltas = [e for e in events if e["type"] == "speech.audio.delta"]
        audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
        samples, rate = decode(audio, fmt)
        assert rate == 24000 and samples.size / rate > 2.0
        assert len(deltas) >= (2 if fmt == "pcm" else 1)


def test_models_and_voices_are_listed(client: openai.OpenAI, server: Any, tmp_path: Path) -> None:
    assert {"tts-1", "tts-1-hd", "chatterbox"} <= {m.id for m in client.models.list()}
    voices = requests.get(server.url + "/v1/audio/voices", headers=AUTH, timeout=TIMEOUT).json()["voices"]
    assert {"id": "operator", "name": "Operator", "type": "character"} in voices


def test_a_library_voice_can_be_used(client: openai.OpenAI, server: Any) -> None:
    t = np.arange(24000 * 3) / 24000
    tone = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, tone, 24000, format="WAV")
    created = requests.post(
        server.url + "/voices",
        files={"audio": ("c.wav", buf.getvalue(), "audio/wav")},
        data={"id": "narrator"},
        headers=AUTH,
        timeout=TIMEOUT,
    )
    assert created.status_code == 201
    reply = client.audio.speech.create(
        model="tts-1", voice="narrator", input="Once upon a time.", response_format="flac"
    )
    samples, rate = decode(reply.content, "flac")
    assert rate == 24000 and samples.size > 0
    # Newer clients send a custom voice as an object.
    as_object = requests.post(
        server.url + "/v1/audio/speech",
        json={"model": "tts-1", "voice": {"id": "narrator"}, "input": "The end.", "response_format": "pcm"},
        headers=AUTH,
        timeout=TIMEOUT,
    )
    assert as_object.status_code == 200 and len(as_object.content) > 24000


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": "tts-1", "voice": "alloy", "input": "Hi there."}, "unknown_voice"),
        ({"model": "tts-1", "input": "Hi there."}, "missing_field"),
        ({"model": "tts-1", "voice": "../operator", "input": "Hi there."}, "unknown_voice"),
        ({"model": "tts-1", "voice": "operator", "input": "x" * 4097}, "input_too_long"),
        ({"model": "tts-1", "voice": "operator", "input": "   "}, "missing_field"),
        (
            {"model": "tts-1", "voice": "operator", "input": "Hi.", "response_format": "aac"},
            "unsupported_response_format",
        ),
        ({"model": "tts-1", "voice": "operator", "input": "Hi.", "response_format": "ogg"}, "bad_response_format"),
        ({"model": "tts-1", "voice": "operator", "input": "Hi.", "speed": 4.5}, "bad_speed"),
        ({"model": "tts-1", "voice": "operator", "input": "Hi.", "speed": "fast"}, "bad_speed"),
        ({"model": "tts-1", "voice": "operator", "input": "Hi.", "stream_format": "chunks"}, "bad_stream_format"),
        ({"model": "whisper-1", "voice": "operator", "input": "Hi."}, "unknown_model"),
        ({"voice": "operator", "input": "Hi."}, "missing_field"),
        ({"model": "tts-1", "voice": "operator", "input": "🎉🎉 *** --- | ---"}, "nothing_to_say"),
        (
            {"model": "tts-1", "voice": "operator", "input": "\x00\x07 \u200b …", "response_format": "wav"},
            "nothing_to_say",
        ),
    ],
)
def test_bad_requests_are_400_never_a_default_voice(server: Any, body: dict[str, Any], code: str) -> None:
    reply = requests.post(server.url + "/v1/audio/speech", json=body, headers=AUTH, timeout=TIMEOUT)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == code
    assert requests.get(server.url + "/health", headers=AUTH, timeout=TIMEOUT).status_code == 200


def test_the_client_sees_typed_errors(client: openai.OpenAI, server: Any) -> None:
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
    stranger = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", timeout=TIMEOUT, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.audio.speech.create(model="tts-1", voice="operator", input="Hello.")
    reply = client.audio.speech.create(model="tts-1", voice="operator", input="Still working.", response_format="wav")
    assert decode(reply.content, "wav")[1] == 24000


def speak(url: str, **body: Any) -> requests.Response:
    return requests.post(
        url + "/v1/audio/speech", json={"model": "tts-1", "voice": "operator", **body}, headers=AUTH, timeout=TIMEOUT
    )


def test_control_characters_are_not_spoken_and_cost_no_sentence(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    # The review: each NUL dropped its sentence and logged two tracebacks.
    caplog.set_level(logging.INFO)
    clean = "Hello there, caller. The line is open now. Please hold."
    dirty = "Hello\x00 there, caller.\x07 The line\x00 is open now.\x1b Please\x00 hold."
    heard = {}
    for name, text in (("clean", clean), ("dirty", dirty)):
        reply = speak(server.url, input=text, response_format="wav")
        assert reply.status_code == 200
        heard[name] = decode(reply.content, "wav")[0].size
    assert heard["dirty"] == pytest.approx(heard["clean"], rel=0.05)
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []


def test_speech_is_capped_in_length(start_server: Any, tmp_path: Path) -> None:
    with OllamaStandIn() as ollama:
        server = start_server(server_config(ollama.url, tmp_path, limits={"max_speech_seconds": 5.0}))
        text = "The keeper rows out to the island at dawn, every single day."  # ~3 s of speech: ~6 s at half speed
        whole = speak(server.url, input=text, speed=0.5, response_format="flac")
        assert whole.status_code == 200 and whole.headers["X-Audio-Truncated"] == "true"
        samples, rate = decode(whole.content, "flac")
        assert samples.size / rate == pytest.approx(5.0, abs=0.01)
        assert float(whole.headers["X-Audio-Duration"]) == pytest.approx(5.0, abs=0.01)
        streamed = speak(server.url, input=text, speed=0.5, response_format="pcm")
        assert streamed.status_code == 200 and len(streamed.content) == 5 * 24000 * 2
        assert "X-Audio-Truncated" not in speak(server.url, input=text, response_format="flac").headers
        # Surely too long (estimated at a fast speaking rate): refused before any synthesis.
        too_long = speak(server.url, input="This is a long text. " * 8, speed=0.5, response_format="mp3")
        assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "speech_too_long"


def test_the_review_input_is_refused_up_front(server: Any) -> None:
    # 4096 characters at speed 0.25: 15 minutes of audio with nothing to stop it.
    reply = speak(server.url, input=("Words to read out loud. " * 171)[:4096], speed=0.25)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "speech_too_long"
    assert "300 s" in reply.json()["error"]["message"]


class CountingVoice(TTSEngine):
    """The real Piper voice, counting the sentences it was asked to speak."""

    def __init__(self, piper: TTSEngine) -> None:
        self.piper, self.name, self.sample_rate = piper, piper.name, piper.sample_rate
        self.sentences = 0

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        self.sentences += 1
        return self.piper.synthesize(text, voice, cancel)


@pytest.mark.parametrize("response_format", ["mp3", "flac"])
def test_a_caller_who_hangs_up_stops_a_whole_file_synthesis(
    start_server: Any, tmp_path: Path, piper_engines: Any, response_format: str
) -> None:
    voice = CountingVoice(piper_engines[0])
    sentences = [f"This is sentence number {n} of a long story that nobody will hear." for n in range(1, 41)]
    with OllamaStandIn() as ollama:
        server = start_server(server_config(ollama.url, tmp_path), engines=(voice, piper_engines[1]))
        body = json.dumps(
            {"model": "tts-1", "voice": "operator", "input": " ".join(sentences), "response_format": response_format}
        ).encode()
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as caller:
            caller.sendall(
                b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {TEST_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            for _ in range(600):  # bounded: until the voice model is at work on this request
                if voice.sentences >= 2:
                    break
                time.sleep(0.05)
            assert voice.sentences >= 2
        # The caller is gone: its slot comes back long before the 40 sentences would be spoken.
        for _ in range(600):
            if requests.get(server.url + "/health", headers=AUTH, timeout=TIMEOUT).json()["queue"]["active"] == 0:
                break
            time.sleep(0.05)
        stopped_at = voice.sentences
        assert stopped_at < len(sentences) / 2
        assert requests.get(server.url + "/health", headers=AUTH, timeout=TIMEOUT).json()["queue"]["active"] == 0
        assert voice.sentences == stopped_at
