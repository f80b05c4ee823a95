"""More than one server: the phone fails over mid-call with its conversation, HAProxy in front of a fleet."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pi_client.audio.playback import WavFileSink
from pi_client.call.machine import Outcome
from pi_client.telephone.hook import GpioHook
from tests.helpers import mock_pins, word_set
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import build_phone, heard, until
from tests.server_rig import ServerProcess, start_server

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
