"""The embedded backend with the real SmolLM2-135M (its answers are nonsense: only their arrival is checked)."""

from __future__ import annotations

import logging
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from cloud_server.llm.base import LLMError
from cloud_server.llm.embedded import EmbeddedLLM, packaged_gguf_path
from cloud_server.llm.ollama import OllamaLLM
from common.config import CharacterConfig, LLMConfig
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn

MESSAGES = [
    {"role": "system", "content": "You are a friendly telephone operator."},
    {"role": "user", "content": "Hello, who is this?"},
]


@pytest.fixture(scope="module")
def smollm2() -> Iterator[EmbeddedLLM]:
    """One loaded SmolLM2 for the module (loading takes about half a second)."""
    llm = EmbeddedLLM(LLMConfig(backend="embedded", max_tokens=24, embedded_threads=1))
    llm.warm_up()
    yield llm
    llm.close()


def test_the_packaged_model_is_found_without_importing_its_package() -> None:
    path = Path(packaged_gguf_path())
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_a_streamed_reply_arrives(smollm2: EmbeddedLLM) -> None:
    pieces = list(smollm2.stream_reply(MESSAGES))
    assert len(pieces) > 1, "streamed token by token"
    assert "".join(pieces).strip()
    assert smollm2.is_reachable()


def test_cancel_stops_generation_between_tokens(smollm2: EmbeddedLLM) -> None:
    cancel = threading.Event()
    reply = smollm2.stream_reply(MESSAGES, cancel)
    assert next(reply)
    cancel.set()
    assert list(reply) == []
    assert list(smollm2.stream_reply(MESSAGES)), "the model is free again afterwards"


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    llm = EmbeddedLLM(LLMConfig(backend="embedded", embedded_model_path=str(tmp_path / "nope.gguf")))
    assert llm.is_reachable() is False
    with pytest.raises(LLMError, match="model file not found: .*nope.gguf"):
        llm.warm_up()
    with pytest.raises(LLMError, match="not found"):
        list(llm.stream_reply(MESSAGES))


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a GGUF file" * 100)
    with pytest.raises(LLMError, match="cannot load the embedded LLM model bogus.gguf"):
        EmbeddedLLM(LLMConfig(backend="embedded", embedded_model_path=str(bogus))).warm_up()


def _long_words(n: int) -> str:
    """About 250 tokens of ordinary talk."""
    return " ".join(f"Call {n}, note {i}: the lighthouse keeper counted {i * 7} ships in the bay." for i in range(12))


def test_a_long_session_is_trimmed_to_the_2048_token_context_and_still_answered(
    start_server: Callable[..., RunningServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    llm = {"backend": "embedded", "max_tokens": 24, "embedded_threads": 1}
    server = start_server(server_config("http://127.0.0.1:9", tmp_path, llm=llm))
    for n in range(8):  # eight long turns: ~4000 tokens of history, twice SmolLM2's context
        server.services.sessions.record("long-call", "operator", _long_words(n), _long_words(100 + n))
    caplog.set_level(logging.INFO, logger="cloud_server.llm.context")
    headers = {"X-API-Key": TEST_KEY}
    body = {"text": "Who is this?", "session_id": "long-call"}
    with requests.post(f"{server.url}/process-text", json=body, headers=headers, stream=True, timeout=120) as reply:
        assert reply.status_code == 200
        b"".join(reply.iter_content(chunk_size=None))

    history = requests.get(f"{server.url}/sessions/long-call", headers=headers, timeout=10).json()["history"]
    assert history[-2] == {"role": "user", "content": "Who is this?"}
    assert history[-1]["content"].strip(), "no reply"
    assert CharacterConfig().apology not in history[-1]["content"], "the model failed (context overflow?)"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("History trimmed")]
    match = re.search(r"the 2048-token context: dropped (\d+) of 16 messages", line)
    assert match, line
    assert 2 <= int(match.group(1)) < 16 and int(match.group(1)) % 2 == 0, "whole turns, not all of them"


def test_the_standin_can_answer_with_smollm2_through_the_official_client(smollm2: EmbeddedLLM) -> None:
    with OllamaStandIn(backend=smollm2) as standin:
        llm = OllamaLLM(LLMConfig(ollama_host=standin.url, timeout_seconds=60.0))
        pieces = list(llm.stream_reply(MESSAGES))
        assert len(pieces) > 1 and "".join(pieces).strip()
        (request,) = standin.chat_requests()
        assert request.finished.wait(60) and request.completed and request.messages == MESSAGES


def test_the_standin_passes_the_requests_token_cap_to_smollm2(smollm2: EmbeddedLLM) -> None:
    with OllamaStandIn(backend=smollm2) as standin:
        llm = OllamaLLM(LLMConfig(ollama_host=standin.url, timeout_seconds=60.0, max_tokens=3))
        pieces = list(llm.stream_reply(MESSAGES))
        assert 1 <= len(pieces) <= 3
        assert standin.chat_requests()[0].options["num_predict"] == 3


def test_the_standin_runs_as_a_command_for_the_offline_demo() -> None:
    """``python -m tests.ollama_standin --port 0 --smollm2`` serves SmolLM2 until stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ollama_standin", "--port", "0", "--smollm2"],
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _ready_url(proc, timeout=60.0)
        llm = OllamaLLM(LLMConfig(ollama_host=url, timeout_seconds=60.0))
        assert llm.is_reachable()
        llm.warm_up()
        assert "".join(llm.stream_reply(MESSAGES)).strip()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode is not None


def _ready_url(proc: subprocess.Popen[str], timeout: float) -> str:
    """Read the process's log until its Ready line; return the URL it names."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([proc.stderr], [], [], 0.2)
        if readable:
            line = proc.stderr.readline()
            match = re.search(r"Ready: Ollama stand-in on (http://\S+)", line)
            if match:
                return match.group(1)
            assert line or proc.poll() is None, "the stand-in exited before it was ready"
    raise AssertionError("the stand-in did not report Ready")
