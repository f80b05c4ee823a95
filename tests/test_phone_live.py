"""The phone in-process against a real ``cloud_server``: the hook on gpiozero's MockFactory, real aplay.

Hang-up mid-reply, a busy server (503), and a server that goes away and comes back.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from common.config import ClientConfig
from pi_client.audio.playback import AplaySink, WavFileSink
from pi_client.call.machine import Outcome, State
from pi_client.telephone.hook import GpioHook
from tests.alsa_rig import AlsaRig
from tests.helpers import mock_pins, word_set
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import OFFLINE_WORDS, alive, build_phone, heard, phone_running, until
from tests.server_rig import ServerProcess, free_port, start_server

WAIT = 120.0
PIN = 17


# --------------------------------------------------------------------------- hang-up


def test_hang_up_mid_reply_kills_playback_and_closes_the_request(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    call_question_wav: Path,
    alsa_rig: AlsaRig,
    tmp_path: Path,
) -> None:
    # A long answer, one sentence every 0.7 s: the server writes audio all along, as a real reply does.
    steps: list[str | float] = []
    for i in range(20):
        steps += [f"This is sentence number {i + 1} of a very long answer. ", 0.7]
    call_standin.script(*steps)
    before = len(call_standin.chat_requests())
    sink = AplaySink(env={"ALSA_CONFIG_PATH": alsa_rig.env()["ALSA_CONFIG_PATH"]})

    async def scenario(pins: Any) -> tuple[int, Any]:
        rig = build_phone(call_server, call_question_wav, call_whisper, tmp_path, sink)
        running = asyncio.create_task(rig.phone.run(GpioHook(rig.settings.hook)))
        try:
            pins.pin(PIN).drive_low()  # contact closed to ground (pull-up): the handset is lifted

            def mid_reply() -> bool:
                chats = call_standin.chat_requests()
                assert not running.done(), running
                return (
                    rig.phone.state is State.REPLYING
                    and sink.pid is not None
                    and len(chats) > before
                    and chats[-1].pieces_sent >= 3
                )

            await until(mid_reply, "the reply to be playing", WAIT / 2)
            aplay_pid = sink.pid
            assert aplay_pid is not None and alive(aplay_pid)
            chat = call_standin.chat_requests()[-1]
            pins.pin(PIN).drive_high()  # back on the cradle
            await until(lambda: not alive(aplay_pid), "aplay to stop after the hang-up", 5.0)
            assert rig.phone.state is State.ON_HOOK and sink.pid is None
            return aplay_pid, chat
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await rig.close()

    with mock_pins() as pins:
        aplay_pid, chat = asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    assert not alive(aplay_pid)
    # The server saw the hang-up and stopped asking the LLM for more.
    assert chat.client_closed.wait(timeout=15), "the server never noticed the phone hung up"
    assert chat.pieces_sent < 20 and not chat.completed


# --------------------------------------------------------------------------- a busy server (503)


def _hold_the_only_slot(server: ServerProcess, done: threading.Event, first_audio: threading.Event) -> None:
    """Another caller's reply, read to its end (the server's one slot stays taken meanwhile)."""
    from pi_client.server.client import ServerClient, ServerError

    client = ServerClient(server.url, server.key, ClientConfig())
    try:
        with client.open_reply("I was here first") as stream:
            for _ in stream.audio(threading.Event()):
                first_audio.set()
    except ServerError:
        pass  # the test may stop the server under this reply
    finally:
        client.close()
        done.set()


def _turn_while_busy(
    server: ServerProcess, whisper: Any, question: Path, tmp_path: Path
) -> tuple[Any, threading.Event]:
    """One file-mode turn while another caller holds the server's only slot."""
    done, first_audio = threading.Event(), threading.Event()
    threading.Thread(target=_hold_the_only_slot, args=(server, done, first_audio), daemon=True).start()
    assert first_audio.wait(60), "the first caller never got audio"

    async def one_turn() -> Any:
        rig = build_phone(server, question, whisper, tmp_path, WavFileSink(tmp_path / "r.wav"))
        try:
            await rig.phone.run_one_turn()
        finally:
            await rig.close()
        return rig.phone

    return asyncio.run(asyncio.wait_for(one_turn(), WAIT)), done


def test_busy_is_retried_once_after_retry_after_and_then_answered(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path, caplog: Any
) -> None:
    server = start_server(tmp_path / "srv", call_standin.url, {"limits": {"queue_depth": 1, "retry_after_seconds": 4}})
    call_standin.script("Just a moment please, I am busy. ", 3.0, "It is a lovely city to visit in the spring.")
    try:
        with caplog.at_level("INFO"):
            phone, done = _turn_while_busy(server, call_whisper, call_question_wav, tmp_path)
        assert done.wait(30)
    finally:
        server.stop()
    assert "server busy; asking again in 4.0s" in caplog.text
    assert [t.outcome for t in phone.turns] == [Outcome.DONE]
    text, _ = heard(call_whisper, tmp_path / "r.wav")
    assert {"lovely", "city", "spring"} <= word_set(text), text


def test_busy_with_a_long_retry_after_gets_the_offline_voice_at_once(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path, caplog: Any
) -> None:
    server = start_server(tmp_path / "srv", call_standin.url, {"limits": {"queue_depth": 1, "retry_after_seconds": 30}})
    call_standin.script("Hold on, this takes a while. ", 20.0, "Done now.")
    try:
        with caplog.at_level("INFO"):
            phone, _ = _turn_while_busy(server, call_whisper, call_question_wav, tmp_path)
    finally:
        server.stop()
    assert "asking again" not in caplog.text
    assert [t.outcome for t in phone.turns] == [Outcome.BUSY]
    text, _ = heard(call_whisper, tmp_path / "r.wav")
    assert len(word_set(text) & OFFLINE_WORDS) >= 3, text


# --------------------------------------------------------------------------- the server goes and comes back


def test_server_down_then_back_the_phone_recovers_by_itself(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    port = free_port()
    first = start_server(tmp_path / "a", call_standin.url, port=port)
    first.kill()  # the GPU box is gone before anyone calls
    call_standin.script("Paris is the capital of France. ")
    servers = [first]
    client_cfg = {"connect_timeout_seconds": 1.0, "health_interval_seconds": 0.5, "health_backoff_max_seconds": 0.5}

    async def scenario(pins: Any) -> None:
        sink = WavFileSink(tmp_path / "r.wav")
        rig = build_phone(
            first, call_question_wav, call_whisper, tmp_path, sink, gated=True, monitor=True, pi={"client": client_cfg}
        )
        phone, talk = rig.phone, rig.talk
        assert talk is not None
        rig.monitor.start()
        async with phone_running(rig):
            chats_before = len(call_standin.chat_requests())
            pins.pin(PIN).drive_low()  # lift: the phone checks the server at once
            await until(lambda: phone.state is State.LISTENING and rig.monitor.up is False, "the server known down")
            talk.put_nowait(None)
            await until(lambda: sink.utterances == 2 and phone.state is State.LISTENING, "the offline message")
            assert len(call_standin.chat_requests()) == chats_before  # nobody waited on a dead line
            pins.pin(PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up")

            again = await asyncio.to_thread(start_server, tmp_path / "b", call_standin.url, None, port, None, first.key)
            servers.append(again)
            await until(lambda: rig.monitor.up is True, "the monitor to see the server back")  # nobody poked it
            pins.pin(PIN).drive_low()
            await until(lambda: phone.state is State.LISTENING, "the second greeting")
            talk.put_nowait(None)
            await until(lambda: len(phone.turns) == 1 and phone.state is State.LISTENING, "the answer", WAIT)
            assert phone.turns[-1].outcome is Outcome.DONE
            pins.pin(PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the second hang-up")

    try:
        with mock_pins() as pins:
            asyncio.run(asyncio.wait_for(scenario(pins), WAIT * 2))
    finally:
        for server in servers:
            server.stop()
    text, _ = heard(call_whisper, tmp_path / "r.wav")
    said = word_set(text)
    assert len(said & OFFLINE_WORDS) >= 3, text  # the first call: the phone's own voice
    assert {"capital", "france"} <= said, text  # the second call: the server's answer (Paris is the ...)
