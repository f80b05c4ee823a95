"""More than one server: the phone fails over mid-call with its conversation, HAProxy in front of a fleet."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.haproxy.render import render
from pi_client.audio.playback import WavFileSink
from pi_client.call.machine import Outcome
from pi_client.telephone.hook import GpioHook
from tests.helpers import mock_pins, wait_for, word_set
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import build_phone, heard, until
from tests.server_rig import ServerProcess, free_port, start_server

WAIT = 120.0
PIN = 17


def replies(standin: OllamaStandIn) -> list[Any]:
    """The streamed chat requests (the server's start-up warm-up is not streamed)."""
    return [r for r in standin.chat_requests() if r.stream]


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[list[OllamaStandIn], list[ServerProcess]]]:
    """Two real ``cloud_server`` processes sharing one key, each with its own LLM stand-in."""
    key = secrets.token_urlsafe(24)
    standins = [OllamaStandIn().start(), OllamaStandIn().start()]
    servers: list[ServerProcess] = []
    try:
        for i, standin in enumerate(standins):
            servers.append(start_server(tmp_path / f"srv{i}", standin.url, key=key))
        yield standins, servers
    finally:
        for server in servers:
            server.stop()
        for standin in standins:
            standin.stop()


def test_the_phone_fails_over_mid_call_with_the_conversation_intact(
    two_servers: tuple[list[OllamaStandIn], list[ServerProcess]],
    call_whisper: Any,
    call_question_wav: Path,
    tmp_path: Path,
) -> None:
    (first_llm, second_llm), (first, second) = two_servers
    first_llm.script("The capital of France is Paris. ")
    second_llm.script("Rome is the capital of Italy. ")
    sink = WavFileSink(tmp_path / "earpiece.wav")

    async def call(pins: Any) -> Any:
        rig = build_phone(
            first, call_question_wav, call_whisper, tmp_path, sink, gated=True, monitor=True, more_servers=(second,)
        )
        assert rig.talk is not None
        rig.monitor.start()
        running = asyncio.create_task(rig.phone.run(GpioHook(rig.settings.hook)))
        try:
            pins.pin(PIN).drive_low()  # the handset is lifted
            rig.talk.put_nowait(None)
            await until(lambda: len(rig.phone.turns) == 1, "the first turn", WAIT / 2)
            first.kill()  # the GPU box dies between two turns of the same call
            rig.talk.put_nowait(None)
            await until(lambda: len(rig.phone.turns) == 2, "the second turn", WAIT / 2)
            assert not running.done()
            return list(rig.phone.turns)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await rig.close()

    with mock_pins() as pins:
        turns = asyncio.run(asyncio.wait_for(call(pins), WAIT))
    assert [t.outcome for t in turns] == [Outcome.DONE, Outcome.DONE]
    assert turns[0].session_id == turns[1].session_id  # one call, whichever server answered
    assert len(replies(first_llm)) == 1
    (chat,) = replies(second_llm)
    # The second server never saw the first turn, yet its LLM gets it: the phone sent the conversation.
    roles = [m["role"] for m in chat.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert {"capital", "france"} <= word_set(chat.messages[1]["content"])
    assert chat.messages[2]["content"] == "The capital of France is Paris."
    assert {"capital", "france"} <= word_set(chat.messages[3]["content"])
    # The caller heard both answers, not the offline voice.
    text, _ = heard(call_whisper, tmp_path / "earpiece.wav")
    assert {"paris", "rome", "italy"} <= word_set(text), text


# --------------------------------------------------------------------------- HAProxy in front of a fleet


def test_haproxy_in_front_of_two_servers_answers_with_one_stopped(
    two_servers: tuple[list[OllamaStandIn], list[ServerProcess]], tmp_path: Path
) -> None:
    """The Debian haproxy with deploy/haproxy/fleet.cfg: leastconn, /health checks, a stopped server skipped."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("haproxy is not installed (scripts/setup installs it)")
    standins, (first, second) = two_servers
    for standin in standins:
        standin.script("Hello from the fleet. ")
    front = f"http://127.0.0.1:{free_port()}"
    cfg = tmp_path / "fleet.cfg"
    cfg.write_text(render([first.url, second.url], front.removeprefix("http://"), check_interval="500ms"))
    subprocess.run([haproxy, "-c", "-f", str(cfg)], check=True, capture_output=True, timeout=30)
    proxy = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    auth = {"Authorization": f"Bearer {first.key}"}

    def turn() -> int:
        with requests.post(front + "/process-text", json={"text": "Hello?"}, headers=auth, stream=True,
                           timeout=60) as reply:
            body = b"".join(reply.iter_content(chunk_size=None)) if reply.status_code == 200 else b""
        return reply.status_code if len(body) > 44 + 2000 else -reply.status_code  # audio, not just a header

    try:
        wait_for(lambda: _answers(front + "/health"), 30, "haproxy to answer")
        assert [turn() for _ in range(2)] == [200, 200]
        assert all(replies(s) for s in standins), "leastconn never used one of the servers"
        first.stop()
        # More calls than the server has reply slots (4): each finished reply gives its slot back
        # (werkzeug's development server behind HAProxy once kept them all: the fifth was a 503).
        assert [turn() for _ in range(6)] == [200] * 6  # every call still answered
        assert len(replies(standins[1])) >= 3
        assert requests.get(front + "/health", timeout=10).json() == {"status": "ok"}
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
