"""A reply the caller cut short: the next turn's LLM sees only what was played (real server, Piper, Ollama stand-in)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cloud_server.pipeline.heard import Spoken, clip
from cloud_server.tts.base import VoiceSpec
from common.config import ClientConfig
from common.wav import WavStreamReader
from pi_client.server.client import ReplyRequest, ServerClient
from pi_client.server.fleet import ServerFleet
from pi_client.server.heard import report_heard
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TIMEOUT = 30
FIRST = "The Nile is the longest river in Africa."
SECOND = "Second comes the Amazon, which carries more water than any other river on Earth."
THIRD = "Third is the Yangtze, the longest river in Asia."
MARGIN_SECONDS = 0.6
"""How far into the second sentence the caller cuts in (Piper's durations vary a little from run to run)."""


def audio_seconds(server: RunningServer, text: str) -> float:
    """How long the server's voice takes to say ``text``."""
    pipeline = server.services.pipeline
    pcm = b"".join(pipeline.primary.synthesize(text, VoiceSpec(), threading.Event()))
    return len(pcm) / 2 / pipeline.sample_rate


def play_until(chunks: Iterator[bytes], seconds: float) -> float:
    """Read a streamed WAV reply until ``seconds`` of its audio arrived (the caller stops listening there)."""
    reader = WavStreamReader()
    got = 0
    for chunk in chunks:
        got += len(reader.feed(chunk))
        if reader.format is not None and got / 2 / reader.format.sample_rate >= seconds:
            return got / 2 / reader.format.sample_rate
    raise AssertionError(f"the reply ended after {got} bytes, before {seconds:.1f} s")


def report(server: RunningServer, session_id: str, body: Any) -> requests.Response:
    return requests.post(f"{server.url}/sessions/{session_id}/heard", json=body, headers=AUTH, timeout=TIMEOUT)


def ask(server: RunningServer, body: dict[str, Any]) -> requests.Response:
    return requests.post(server.url + "/process-text", json=body, headers=AUTH, timeout=TIMEOUT, stream=True)


def assert_heard_only_the_start(content: str) -> None:
    assert content.startswith(FIRST + " Second"), content
    assert "Earth" not in content and "Yangtze" not in content, content
    assert content.endswith("…"), content


@pytest.fixture
def server(ollama: OllamaStandIn, start_server: Any, tmp_path: Path) -> RunningServer:
    ollama.script(FIRST + " ", SECOND + " ", THIRD)
    return start_server(server_config(ollama.url, tmp_path))


@pytest.mark.parametrize("report_first", [False, True], ids=["after-hang-up", "while-streaming"])
def test_the_next_turn_holds_only_what_the_caller_heard(
    server: RunningServer, ollama: OllamaStandIn, report_first: bool
) -> None:
    """The phone stops playing 0.6 s into the second sentence, closes the reply and reports it.

    ``while-streaming``: the report reaches the server while the reply is still being made (the
    server learns of the closed connection only at its next write), so the cut waits for the record.
    """
    heard = audio_seconds(server, FIRST) + MARGIN_SECONDS
    with ask(server, {"text": "Tell me about rivers.", "session_id": "call-1"}) as reply:
        play_until(reply.iter_content(chunk_size=None), heard)
        if report_first:
            answer = report(server, "call-1", {"heard_seconds": heard})
    if not report_first:
        server.wait_slots_free()
        answer = report(server, "call-1", {"heard_seconds": heard})
    assert answer.status_code == 200, answer.text
    assert answer.json()["cut"] is True
    assert_heard_only_the_start(answer.json()["heard_text"])

    with ask(server, {"text": "Wait, which one is in Asia?", "session_id": "call-1"}) as reply:
        b"".join(reply.iter_content(chunk_size=None))
    messages = ollama.chat_requests()[-1].messages
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == answer.json()["heard_text"]


def test_a_phone_that_keeps_the_conversation_clips_its_own_history(
    server: RunningServer, ollama: OllamaStandIn
) -> None:
    """Stateless turns: the fleet sends the history it keeps; after the report it holds the heard part.

    When the server that spoke is gone before the report, the phone keeps the caller's words and a cut mark.
    """
    heard = audio_seconds(server, FIRST) + MARGIN_SECONDS
    fleet = ServerFleet((server.url,), TEST_KEY, ClientConfig())

    def cut_in(text: str) -> None:
        with fleet.open(ReplyRequest(text=text, session_id="call-2")) as stream:
            played = 0
            for pcm in stream.audio(threading.Event()):
                played += len(pcm)
                if played / 2 / (stream.sample_rate or 1) >= heard:
                    break
            stream.abort()

    try:
        cut_in("Tell me about rivers.")
        heard_text = asyncio.run(report_heard(fleet, "call-2", heard))  # the barge-in seam
        assert heard_text is not None
        assert_heard_only_the_start(heard_text)
        with fleet.open(ReplyRequest(text="Which one is in Asia?", session_id="call-2")) as stream:
            b"".join(stream.audio(threading.Event()))
        chat = ollama.chat_requests()[-1]
        cut_in("And in Europe?")
        server.stop()
        assert asyncio.run(report_heard(fleet, "call-2", heard)) is None
        kept = fleet.conversation.history("call-2")
    finally:
        fleet.close()
    assert chat.messages[1:] == [
        {"role": "user", "content": "Tell me about rivers."},
        {"role": "assistant", "content": heard_text},
        {"role": "user", "content": "Which one is in Asia?"},
    ]
    assert kept[-2:] == ({"role": "user", "content": "And in Europe?"}, {"role": "assistant", "content": "…"})


BAD_REPORTS = [
    ("call-3", {}, 400, "bad_field"),
    ("call-3", {"heard_seconds": "2"}, 400, "bad_field"),
    ("call-3", {"heard_seconds": True}, 400, "bad_field"),
    ("call-3", {"heard_seconds": -1}, 400, "out_of_range"),
    ("call-3", {"heard_seconds": 1e9}, 400, "out_of_range"),
    ("call-3", {"heard_seconds": 0, "withdrawn": "yes"}, 400, "bad_field"),
    ("call-3", [1.5], 400, "bad_json"),
    ("nobody", {"heard_seconds": 1.0}, 404, "unknown_reply"),
    ("bad%0Aid", {"heard_seconds": 1.0}, 404, "unknown_reply"),
]


def test_a_bad_heard_report_is_a_clear_json_error(server: RunningServer) -> None:
    for session_id, body, status, code in BAD_REPORTS:
        answer = report(server, session_id, body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (body, answer.text)
    keyless = requests.post(f"{server.url}/sessions/x/heard", json={"heard_seconds": 1}, timeout=TIMEOUT)
    assert keyless.status_code == 401
    client = ServerClient(server.url, TEST_KEY, ClientConfig())
    try:
        assert client.report_heard("nobody", 1.0) is None  # logged; the call goes on
    finally:
        client.close()
    assert server.health()["status"] == "ok"


def test_a_withdrawn_turn_leaves_the_history(server: RunningServer, ollama: OllamaStandIn) -> None:
    """The caller went on talking before hearing any of the reply (the phone held its first audio back):
    the turn is withdrawn, and the next turn (the caller's words again, with the rest) comes alone."""
    with ask(server, {"text": "Could you tell me?", "session_id": "call-5"}) as reply:
        b"".join(reply.iter_content(chunk_size=None))  # the server sent it all: it was recorded
    answer = report(server, "call-5", {"heard_seconds": 0, "withdrawn": True})
    assert answer.status_code == 200 and answer.json()["withdrawn"] is True, answer.text
    with ask(server, {"text": "Could you tell me the name of the longest river?", "session_id": "call-5"}) as reply:
        b"".join(reply.iter_content(chunk_size=None))
    messages = ollama.chat_requests()[-1].messages
    assert [m["role"] for m in messages] == ["system", "user"], messages


def test_a_heard_report_past_the_reply_changes_nothing(server: RunningServer) -> None:
    with ask(server, {"text": "Tell me about rivers.", "session_id": "call-4"}) as reply:
        b"".join(reply.iter_content(chunk_size=None))
    answer = report(server, "call-4", {"heard_seconds": 100.0})
    assert answer.json()["cut"] is False
    session = requests.get(f"{server.url}/sessions/call-4", headers=AUTH, timeout=TIMEOUT).json()
    assert session["last_reply"] == f"{FIRST} {SECOND} {THIRD}" == answer.json()["heard_text"]



def test_the_clip_keeps_whole_sentences_played_and_the_words_of_the_cut_one_that_fit() -> None:
    spoken = [Spoken("One two three.", 0.0, 1.4, complete=True),
              Spoken("Four five six seven.", 1.4, 3.4, complete=True)]
    assert clip(spoken, 3.4) == ("One two three. Four five six seven.", False)
    assert clip(spoken, 1.4) == ("One two three.…", True)
    assert clip(spoken, 1.4 + 2.0 * 0.5) == ("One two three. Four five…", True)  # half its characters: two words
    assert clip(spoken, 0.0) == ("…", True)
    unfinished = [Spoken("One two three.", 0.0, 1.4, complete=True), Spoken("Four five six seven.", 1.4, 1.6)]
    assert clip(unfinished, 2.4) == ("One two three. Four five…", True)  # its length from the reply's 10 chars/s
