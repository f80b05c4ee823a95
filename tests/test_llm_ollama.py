"""The Ollama backend through the official client, against the local Ollama stand-in."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import ollama as ollama_client
import pytest
import requests

from cloud_server.llm.base import LLMError
from cloud_server.llm.context import MESSAGE_OVERHEAD_TOKENS
from cloud_server.llm.embedded import EmbeddedLLM
from cloud_server.llm.ollama import OllamaLLM
from cloud_server.llm.select import make_llm
from common.config import HangUpConfig, LLMConfig, replace
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.helpers import wait_for
from tests.ollama_standin import OllamaStandIn
from tests.server_rig import free_port

MESSAGES = [
    {"role": "system", "content": "You are a friendly telephone operator."},
    {"role": "user", "content": "Hello, who is this?"},
]
WAIT = 10.0  # upper bound for anything that should happen "at once"; never reached when all is well


class Consumer:
    """Iterates a reply in its own thread, the way the server's reply pipeline will."""

    def __init__(self, llm: OllamaLLM, cancel: threading.Event | None = None) -> None:
        self.pieces: list[str] = []
        self.arrived = threading.Semaphore(0)
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._taken = 0
        self._stream = llm.stream_reply(MESSAGES, cancel)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for piece in self._stream:
                self.pieces.append(piece)
                self.arrived.release()
        except BaseException as err:  # handed to the test thread
            self.error = err
        finally:
            self.done.set()

    def next_piece(self) -> str:
        assert self.arrived.acquire(timeout=WAIT), "no piece arrived"
        self._taken += 1
        return self.pieces[self._taken - 1]


# --------------------------------------------------------------------------- streaming


def test_pieces_arrive_in_order_while_the_llm_is_still_writing(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    gate = threading.Event()
    ollama.script("Hello, ", "operator speaking. ", gate, "How can I ", "help?")
    consumer = Consumer(OllamaLLM(standin_llm_config))

    assert consumer.next_piece() == "Hello, "
    assert consumer.next_piece() == "operator speaking. "
    (request,) = ollama.chat_requests()
    assert not request.finished.is_set(), "the first sentence arrived before the reply was finished"
    gate.set()
    assert consumer.done.wait(WAIT) and consumer.error is None
    assert consumer.pieces == ["Hello, ", "operator speaking. ", "How can I ", "help?"]
    assert request.finished.wait(WAIT) and request.completed


def test_the_request_carries_history_think_off_keep_alive_and_options(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    cfg = replace(standin_llm_config, keep_alive="45m", temperature=0.3, max_tokens=77)
    assert "".join(OllamaLLM(cfg).stream_reply(MESSAGES)) == "".join(
        piece for piece in ollama.current_script.steps if isinstance(piece, str)
    )
    (request,) = ollama.chat_requests()
    assert request.model == "llama3.2:3b"
    assert request.messages == MESSAGES
    assert request.stream is True
    assert request.think is False
    assert request.keep_alive == "45m"
    assert request.options == {"temperature": 0.3, "num_predict": 77, "num_ctx": 2048}


def test_two_callers_at_once_each_get_their_whole_reply(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    ollama.script("One, ", 0.2, "two, ", 0.2, "three.")
    llm = OllamaLLM(standin_llm_config)
    consumers = [Consumer(llm), Consumer(llm)]
    for consumer in consumers:
        assert consumer.done.wait(WAIT) and consumer.error is None
        assert consumer.pieces == ["One, ", "two, ", "three."]


# --------------------------------------------------------------------------- the session's history

HEADERS = {"X-API-Key": TEST_KEY}


def _say(server: RunningServer, text: str, session_id: str) -> None:
    body = {"text": text, "session_id": session_id}
    with requests.post(f"{server.url}/process-text", json=body, headers=HEADERS, stream=True, timeout=60) as reply:
        assert reply.status_code == 200
        b"".join(reply.iter_content(chunk_size=None))


def test_ollama_gets_the_history_trimmed_to_the_context_it_is_asked_for(
    ollama: OllamaStandIn, start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path, llm={"context_tokens": 1024}))
    for n in range(8):  # ~350 estimated tokens a message: far more than 1024
        server.services.sessions.record("long-call", "operator", f"question {n} " * 80, f"answer {n} " * 90)
    _say(server, "And now?", "long-call")

    (chat,) = ollama.chat_requests()
    assert chat.options["num_ctx"] == 1024
    assert chat.messages[0]["role"] == "system" and chat.messages[-1] == {"role": "user", "content": "And now?"}
    kept = chat.messages[1:-1]
    assert 0 < len(kept) < 16 and kept[0]["role"] == "user", "the oldest whole turns went, not all of them"
    assert kept[-1]["content"] == "answer 7 " * 90, "the newest turn stays"
    estimate = sum(len(m["content"].encode()) / 3 + MESSAGE_OVERHEAD_TOKENS for m in chat.messages)
    assert estimate <= 1024 - 200, "room for the reply"


def test_a_failed_turn_is_not_written_but_still_rotates_the_session(
    ollama: OllamaStandIn, start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    for n in range(3):
        server.services.sessions.record("failing-call", "operator", f"Question {n}", f"Answer {n}")
    ollama.script(status=500, error="this history breaks the model")
    _say(server, "Question 3", "failing-call")
    _say(server, "Question 4", "failing-call")

    history = requests.get(f"{server.url}/sessions/failing-call", headers=HEADERS, timeout=10).json()["history"]
    assert history == [{"role": "user", "content": "Question 2"}, {"role": "assistant", "content": "Answer 2"}]
    ollama.script("Back again.")
    _say(server, "Question 5", "failing-call")
    assert [m["role"] for m in ollama.chat_requests()[-1].messages] == ["system", "user", "assistant", "user"]


# --------------------------------------------------------------------------- hanging up


def test_cancel_closes_the_stream_and_the_server_sees_it(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    ollama.script("First sentence. ", 60.0, "never sent")
    cancel = threading.Event()
    consumer = Consumer(OllamaLLM(standin_llm_config), cancel)
    assert consumer.next_piece() == "First sentence. "

    cancel.set()  # while the consumer is blocked waiting for the next piece
    assert consumer.done.wait(WAIT), "the iteration did not end on cancel"
    assert consumer.error is None and consumer.pieces == ["First sentence. "]
    (request,) = ollama.chat_requests()
    assert request.client_closed.wait(WAIT), "the stand-in did not see the connection close"
    assert request.pieces_sent == 1 and not request.completed


def test_cancel_works_while_ollama_has_not_answered_yet(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    ollama.script(60.0, "too late")  # a slow prompt evaluation: not even headers yet
    cancel = threading.Event()
    consumer = Consumer(OllamaLLM(replace(standin_llm_config, timeout_seconds=60.0)), cancel)
    wait_for(lambda: len(ollama.chat_requests()) == 1, WAIT, "the chat request")
    cancel.set()
    assert consumer.done.wait(WAIT), "cancel must not wait for the 60 s read timeout"
    assert consumer.error is None and consumer.pieces == []
    assert ollama.chat_requests()[0].client_closed.wait(WAIT)




def test_closing_the_iterator_closes_the_stream(ollama: OllamaStandIn, standin_llm_config: LLMConfig) -> None:
    ollama.script("First sentence. ", 60.0, "never sent")
    reply = OllamaLLM(standin_llm_config).stream_reply(MESSAGES)
    assert next(reply) == "First sentence. "
    reply.close()
    (request,) = ollama.chat_requests()
    assert request.client_closed.wait(WAIT)
    assert not request.completed


def test_an_already_cancelled_reply_sends_nothing(ollama: OllamaStandIn, standin_llm_config: LLMConfig) -> None:
    cancel = threading.Event()
    cancel.set()
    assert list(OllamaLLM(standin_llm_config).stream_reply(MESSAGES, cancel)) == []
    assert ollama.chat_requests() == []


def test_the_llm_keeps_working_after_a_cancelled_reply(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    llm = OllamaLLM(standin_llm_config)
    ollama.script("Start. ", 60.0, "never")
    cancel = threading.Event()
    consumer = Consumer(llm, cancel)
    consumer.next_piece()
    cancel.set()
    assert consumer.done.wait(WAIT)
    ollama.script("Fresh reply.")
    assert list(llm.stream_reply(MESSAGES)) == ["Fresh reply."]


# --------------------------------------------------------------------------- failures


def test_an_unreachable_ollama_fails_fast_with_a_clear_error() -> None:
    llm = OllamaLLM(LLMConfig(ollama_host=f"http://127.0.0.1:{free_port()}", timeout_seconds=60))
    started = time.monotonic()
    with pytest.raises(LLMError, match="cannot reach Ollama at http://127.0.0.1:"):
        list(llm.stream_reply(MESSAGES))
    assert time.monotonic() - started < WAIT, "a refused connection must not wait for the 60 s timeout"
    assert llm.is_reachable() is False
    with pytest.raises(LLMError, match="cannot reach"):
        llm.warm_up()


def test_error_messages_never_show_credentials_in_the_host() -> None:
    llm = OllamaLLM(LLMConfig(ollama_host=f"http://admin:s3cret@127.0.0.1:{free_port()}"))
    with pytest.raises(LLMError) as caught:
        list(llm.stream_reply(MESSAGES))
    assert "s3cret" not in str(caught.value) and "admin" not in str(caught.value)


def test_an_unknown_model_is_named_in_the_error(ollama: OllamaStandIn, standin_llm_config: LLMConfig) -> None:
    llm = OllamaLLM(replace(standin_llm_config, model="mistral:7b"))
    with pytest.raises(LLMError, match="model 'mistral:7b' is not available"):
        list(llm.stream_reply(MESSAGES))
    with pytest.raises(LLMError, match="ollama pull mistral:7b"):
        llm.warm_up()


def test_a_wrong_server_is_not_mistaken_for_a_missing_model(ollama: OllamaStandIn) -> None:
    llm = OllamaLLM(LLMConfig(ollama_host=ollama.url + "/not-ollama", timeout_seconds=2.0))
    with pytest.raises(LLMError, match="answered HTTP 404: 404 page not found"):
        list(llm.stream_reply(MESSAGES))


def test_an_http_500_becomes_an_llm_error(ollama: OllamaStandIn, standin_llm_config: LLMConfig) -> None:
    ollama.script(status=500, error="llama runner process has terminated")
    with pytest.raises(LLMError, match="HTTP 500: llama runner process has terminated"):
        list(OllamaLLM(standin_llm_config).stream_reply(MESSAGES))


def test_a_stall_mid_reply_ends_after_the_configured_timeout(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    ollama.script("I was saying ", end="stall")  # then silence, connection kept open
    llm = OllamaLLM(replace(standin_llm_config, timeout_seconds=0.5))
    pieces: list[str] = []
    started = time.monotonic()
    with pytest.raises(LLMError, match=r"stopped answering \(no data for 0.5 s\)"):
        for piece in llm.stream_reply(MESSAGES):
            pieces.append(piece)
    waited = time.monotonic() - started
    assert pieces == ["I was saying "]
    assert 0.5 <= waited < WAIT, "waits for the timeout, not for the stand-in's 120 s stall"
    (request,) = ollama.chat_requests()
    assert request.client_closed.wait(WAIT), "the stalled connection is closed, not leaked"


def test_a_dropped_connection_mid_reply_becomes_an_llm_error(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    ollama.script("Half a ", end="drop")
    pieces: list[str] = []
    with pytest.raises(LLMError, match="closed the connection before the reply was complete"):
        for piece in OllamaLLM(standin_llm_config).stream_reply(MESSAGES):
            pieces.append(piece)
    assert pieces == ["Half a "]


def test_an_error_line_mid_reply_becomes_an_llm_error(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    ollama.script("Well, ", end="error", error="CUDA error: out of memory")
    with pytest.raises(LLMError, match="failed mid-reply: CUDA error: out of memory"):
        list(OllamaLLM(standin_llm_config).stream_reply(MESSAGES))


# --------------------------------------------------------------------------- warm-up and health


def test_warm_up_asks_ollama_to_load_the_model(ollama: OllamaStandIn, standin_llm_config: LLMConfig) -> None:
    OllamaLLM(replace(standin_llm_config, keep_alive="2h")).warm_up()
    (request,) = ollama.chat_requests()
    assert request.messages == [] and request.keep_alive == "2h" and request.model == "llama3.2:3b"


def test_prompt_warm_up_sends_each_distinct_system_prompt_once(
    ollama: OllamaStandIn, standin_llm_config: LLMConfig
) -> None:
    llm = OllamaLLM(replace(standin_llm_config, keep_alive="2h", context_tokens=1024))
    assert llm.warm_up_prompts(["You are Ada.", "You are Bob.", "You are Ada."]) == 2
    requests_seen = ollama.chat_requests()
    assert [r.messages[0] for r in requests_seen] == [
        {"role": "system", "content": "You are Ada."},
        {"role": "system", "content": "You are Bob."},
    ]
    for request in requests_seen:
        assert request.keep_alive == "2h" and request.options["num_predict"] == 1
        assert request.options["num_ctx"] == 1024, "the replies' context size, or Ollama would reload the model"


def test_start_warms_every_characters_prompt_in_the_background(
    ollama: OllamaStandIn, start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    characters = {
        "operator": {"persona": "You are the operator. Be brief."},
        "pirate": {"persona": "You are a pirate. Speak like one."},
    }
    config = server_config(ollama.url, tmp_path, llm={"warm_up": True, "keep_alive": "1h"}, characters=characters)
    start_server(config)
    wait_for(lambda: len(ollama.chat_requests()) >= 2, WAIT, "a warm-up per character")
    requests_seen = ollama.chat_requests()
    # The system prompt as every turn sends it (persona, then how to hang up), so the cache matches.
    hang_up = "\n\n" + HangUpConfig().instruction.replace("{marker}", HangUpConfig().marker)
    assert [r.messages[0]["content"] for r in requests_seen] == [
        characters["pirate"]["persona"] + hang_up,
        characters["operator"]["persona"] + hang_up,  # the default character last: the one a single slot keeps
    ]
    assert all(r.messages[0]["role"] == "system" and r.keep_alive == "1h" for r in requests_seen)


def test_is_reachable_follows_the_server(standin_llm_config: LLMConfig, ollama: OllamaStandIn) -> None:
    llm = OllamaLLM(standin_llm_config)
    assert llm.is_reachable() is True
    ollama.stop()
    assert llm.is_reachable() is False


def test_make_llm_picks_the_configured_backend(standin_llm_config: LLMConfig) -> None:
    assert isinstance(make_llm(standin_llm_config), OllamaLLM)
    assert isinstance(make_llm(replace(standin_llm_config, backend="embedded")), EmbeddedLLM)


# --------------------------------------------------------------------------- the stand-in's protocol


def test_the_standin_speaks_ollama_to_the_official_client(ollama: OllamaStandIn) -> None:
    client = ollama_client.Client(host=ollama.url, timeout=WAIT)
    ollama.script("Hello ", "there.")
    whole = client.chat(model="llama3.2:3b", messages=MESSAGES, stream=False)
    assert whole.message.content == "Hello there." and whole.done and whole.done_reason == "stop"
    parts = list(client.chat(model="llama3.2:3b", messages=MESSAGES, stream=True))
    assert [p.message.content for p in parts] == ["Hello ", "there.", ""]
    assert parts[-1].done and parts[-1].eval_count == 2 and (parts[-1].total_duration or 0) > 0
    generated = list(client.generate(model="llama3.2:3b", prompt="Hi", stream=True))
    assert "".join(p.response or "" for p in generated) == "Hello there."
    assert client.generate(model="llama3.2:3b", keep_alive="5m").done_reason == "load"
    assert [m.model for m in client.list().models] == ["llama3.2:3b", "smollm2:135m"]
    assert client.show("llama3.2:3b").details.family == "llama"
    with pytest.raises(ollama_client.ResponseError) as missing:
        client.show("nope")
    assert missing.value.status_code == 404 and missing.value.error == "model 'nope' not found"
    assert httpx.get(ollama.url + "/").text == "Ollama is running"
    assert httpx.get(ollama.url + "/api/version").json()["version"]
    assert httpx.post(ollama.url + "/api/chat", content=b"{not json").status_code == 400
