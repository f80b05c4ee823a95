"""The phone against a real running ``cloud_server`` (Ollama stand-in behind it), listened to with Whisper.

File mode runs ``python -m pi_client`` as users do; the hang-up test runs the phone in-process with
the hook on gpiozero's MockFactory and the earpiece on real ``aplay`` into ALSA's file device.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.config import ClientConfig, config_from_dict
from common.wav import read_wav_pcm16
from tests.alsa_rig import AlsaRig
from tests.fixtures_pi import PI_RATE
from tests.ollama_standin import OllamaStandIn
from tests.server_rig import (
    ServerProcess,
    free_port,
    pi_client_process,
    pi_config,
    run_pi_client,
    start_server,
)

OFFLINE_WORDS = {"sorry", "reach", "brain", "try", "again"}
BROKEN_WORDS = {"sorry", "line", "dropped", "say", "again"}
WAIT = 120.0


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until ``condition`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def heard(whisper: Any, path: Path) -> tuple[str, float]:
    """What Whisper hears in a reply WAV, and the reply's length in seconds."""
    pcm, _ = read_wav_pcm16(str(path), PI_RATE)
    return whisper.transcribe(pcm), len(pcm) / 2 / PI_RATE


def last_chat(standin: OllamaStandIn) -> Any:
    requests = standin.chat_requests()
    assert requests, "the server never asked the LLM"
    return requests[-1]


# --------------------------------------------------------------------------- file mode


def test_a_whole_turn_in_file_mode(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    call_standin.script("The capital of France is Paris. ", "It is a lovely city to visit in the spring.")
    reply = tmp_path / "r.wav"
    result = run_pi_client(pi_config(tmp_path), call_server.url, call_server.key, call_question_wav, reply)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ""
    # The server's LLM was asked what the caller said (Whisper on the Pi got it right).
    user_text = last_chat(call_standin).messages[-1]["content"].lower()
    assert {"capital", "france"} <= words(user_text)
    text, seconds = heard(call_whisper, reply)
    assert {"paris", "lovely", "city"} <= words(text), text
    assert 3.0 < seconds < 15.0
    # One INFO line for the turn: transcript, reply text (from /sessions) and stage timings.
    turn_line = next(line for line in result.stderr.splitlines() if "turn: heard=" in line)
    assert "capital of France" in turn_line and "Paris" in turn_line
    for stage in ("endpoint=", "stt=", "first_audio=", "latency=", "total="):
        assert re.search(stage + r"\d+\.\d\ds", turn_line), stage
    assert call_server.key not in result.stderr  # the key never reaches the log


def test_a_whole_turn_with_the_server_transcribing(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    """pi.stt.use_server: the recording goes to /process-audio; the transcript comes back in a header."""
    call_standin.script("Paris is the capital of France. ")
    reply = tmp_path / "r.wav"
    config = pi_config(tmp_path, stt={"use_server": True})
    result = run_pi_client(config, call_server.url, call_server.key, call_question_wav, reply)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loading" not in result.stderr and "Transcribed" not in result.stderr  # no Whisper on the Pi
    assert {"capital", "france"} <= words(last_chat(call_standin).messages[-1]["content"])
    turn_line = next(line for line in result.stderr.splitlines() if "turn: heard=" in line)
    assert "capital of France" in turn_line and "stt=-" in turn_line
    text, _ = heard(call_whisper, reply)
    assert "paris" in words(text), text


def test_server_down_the_phone_answers_in_its_own_voice(
    call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    reply = tmp_path / "r.wav"
    nobody = f"http://127.0.0.1:{free_port()}"
    result = run_pi_client(pi_config(tmp_path), nobody, "some-key", call_question_wav, reply)
    assert result.returncode == 0, result.stderr[-3000:]
    text, seconds = heard(call_whisper, reply)
    assert len(words(text) & OFFLINE_WORDS) >= 3, text
    assert 2.0 < seconds < 10.0
    assert "unavailable" in result.stderr


def test_no_first_audio_in_time_gets_the_offline_voice_and_drops_the_request(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    call_standin.script(60.0, "Far too late.")
    reply = tmp_path / "r.wav"
    config = pi_config(tmp_path, client={"first_audio_timeout_seconds": 3.0})
    result = run_pi_client(config, call_server.url, call_server.key, call_question_wav, reply, timeout=WAIT)
    assert result.returncode == 0, result.stderr[-3000:]
    text, _ = heard(call_whisper, reply)
    assert len(words(text) & OFFLINE_WORDS) >= 3, text
    assert "no audio within 3.0s" in result.stderr


def test_a_refused_key_is_logged_and_the_caller_still_hears_something(
    call_server: ServerProcess, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    reply = tmp_path / "r.wav"
    result = run_pi_client(pi_config(tmp_path), call_server.url, "wrong-key", call_question_wav, reply)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "server refused the turn: 401" in result.stderr
    text, _ = heard(call_whisper, reply)
    assert len(words(text) & OFFLINE_WORDS) >= 3, text


def test_server_killed_mid_reply_plays_what_arrived_then_the_broken_message(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    call_standin.script("Here is the first part of my answer. ", 60.0, "You will never hear this second part.")
    before = len(call_standin.chat_requests())
    doomed = start_server(tmp_path / "doomed", call_standin.url)
    reply = tmp_path / "r.wav"
    try:
        phone = pi_client_process(pi_config(tmp_path), doomed.url, doomed.key, call_question_wav, reply)
        wait_for(
            lambda: len(call_standin.chat_requests()) > before and call_standin.chat_requests()[-1].pieces_sent >= 1,
            WAIT,
            "the LLM's first sentence",
        )
        time.sleep(2.0)  # the first sentence is synthesized and streamed; the LLM now pauses for a minute
        doomed.kill()
        stdout, stderr = phone.communicate(timeout=60)
    finally:
        doomed.stop()
    assert phone.returncode == 0, stderr[-3000:]
    assert stdout == ""
    assert "reply broke off" in stderr
    text, _ = heard(call_whisper, reply)
    said = words(text)
    assert {"first", "part", "answer"} <= said, text
    assert len(said & BROKEN_WORDS) >= 3, text
    assert "never" not in said


# --------------------------------------------------------------------------- the handset


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_hang_up_mid_reply_kills_playback_and_closes_the_request(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    call_question_wav: Path,
    alsa_rig: AlsaRig,
    tmp_path: Path,
) -> None:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    # A long answer, one sentence every 0.7 s: the server writes audio all along, as a real reply does.
    steps: list[str | float] = []
    for i in range(20):
        steps += [f"This is sentence number {i + 1} of a very long answer. ", 0.7]
    call_standin.script(*steps)
    before = len(call_standin.chat_requests())
    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        result = asyncio.run(
            asyncio.wait_for(
                _hang_up_scenario(
                    call_server, call_whisper, call_question_wav, alsa_rig, tmp_path, factory, call_standin, before
                ),
                WAIT,
            )
        )
    finally:
        factory.close()
        Device.pin_factory = previous
    aplay_pid, chat = result
    assert not _alive(aplay_pid)
    # The server saw the hang-up and stopped asking the LLM for more.
    assert chat.client_closed.wait(timeout=15), "the server never noticed the phone hung up"
    assert chat.pieces_sent < 20 and not chat.completed


async def _hang_up_scenario(
    call_server: ServerProcess,
    call_whisper: Any,
    call_question_wav: Path,
    rig: AlsaRig,
    tmp_path: Path,
    factory: Any,
    call_standin: OllamaStandIn,
    before: int,
) -> tuple[int, Any]:
    from pi_client.audio_in import WavFileSource
    from pi_client.audio_out import AplaySink
    from pi_client.call import State
    from pi_client.endpoint import listen
    from pi_client.hook import GpioHook
    from pi_client.offline_voice import OfflineVoice
    from pi_client.phone import Phone
    from pi_client.server_client import ServerClient
    from pi_client.vad import SileroVad

    pi = config_from_dict({"pi": {"cache_dir": str(tmp_path / "cache"), "hook": {"pin": 17}}}).pi
    voice = OfflineVoice(pi.offline_voice, pi.greeting, pi.cache_dir)
    await asyncio.to_thread(voice.prepare)
    vad = SileroVad(pi.vad.threshold)

    async def listen_once() -> Any:
        source = WavFileSource(call_question_wav)
        try:
            return await listen(source, vad, pi.vad)
        finally:
            source.close()

    sink = AplaySink(env={"ALSA_CONFIG_PATH": rig.env()["ALSA_CONFIG_PATH"]})
    client = ServerClient(call_server.url, call_server.key, pi.client)
    phone = Phone(
        settings=pi, listen=listen_once, transcribe=call_whisper.transcribe, client=client, voice=voice, sink=sink
    )
    running = asyncio.create_task(phone.run(GpioHook(pi.hook)))
    pin = factory.pin(17)
    try:
        await asyncio.sleep(0.1)
        pin.drive_low()  # contact closed to ground (pull-up): the handset is lifted

        def replying() -> bool:
            chats = call_standin.chat_requests()
            return (
                phone.state is State.REPLYING
                and sink.pid is not None
                and len(chats) > before
                and chats[-1].pieces_sent >= 3
            )

        deadline = time.monotonic() + WAIT / 2
        while not replying():
            assert not running.done(), running
            chats = call_standin.chat_requests()
            assert time.monotonic() < deadline, (
                f"never mid-reply: state={phone.state} aplay={sink.pid} chats={len(chats) - before} "
                f"pieces={chats[-1].pieces_sent if chats else None} turns={phone.turns}"
            )
            await asyncio.sleep(0.05)
        aplay_pid = sink.pid
        assert aplay_pid is not None and _alive(aplay_pid)
        chat = call_standin.chat_requests()[-1]
        pin.drive_high()  # back on the cradle
        hung_up = time.monotonic()
        while _alive(aplay_pid) and time.monotonic() - hung_up < 5.0:
            await asyncio.sleep(0.02)
        assert not _alive(aplay_pid), "aplay still playing after the hang-up"
        assert phone.state is State.ON_HOOK and sink.pid is None
        return aplay_pid, chat
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        client.close()


# --------------------------------------------------------------------------- a busy server (503)


async def _one_turn(server: ServerProcess, question: Path, reply: Path, whisper: Any, tmp_path: Path) -> Any:
    """One file-mode turn in this process (the phone as __main__ builds it), returning the phone."""
    from pi_client.audio_in import WavFileSource
    from pi_client.audio_out import WavFileSink
    from pi_client.endpoint import listen
    from pi_client.offline_voice import OfflineVoice
    from pi_client.phone import Phone
    from pi_client.server_client import ServerClient
    from pi_client.vad import SileroVad

    pi = config_from_dict({"pi": {"cache_dir": str(tmp_path / "cache")}}).pi
    voice = OfflineVoice(pi.offline_voice, pi.greeting, pi.cache_dir)
    vad = SileroVad(pi.vad.threshold)

    async def listen_once() -> Any:
        source = WavFileSource(question)
        try:
            return await listen(source, vad, pi.vad)
        finally:
            source.close()

    sink = WavFileSink(reply)
    client = ServerClient(server.url, server.key, pi.client)
    phone = Phone(settings=pi, listen=listen_once, transcribe=whisper.transcribe, client=client, voice=voice, sink=sink)
    try:
        await phone.run_one_turn()
    finally:
        await sink.close()
        client.close()
    return phone


def _hold_the_only_slot(server: ServerProcess, done: threading.Event, first_audio: threading.Event) -> None:
    """Another caller's reply, read to its end (the server's one slot stays taken meanwhile)."""
    from pi_client.server_client import ServerClient, ServerError

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


def test_busy_is_retried_once_after_retry_after_and_then_answered(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path, caplog: Any
) -> None:
    server = start_server(tmp_path / "srv", call_standin.url, {"limits": {"queue_depth": 1, "retry_after_seconds": 4}})
    call_standin.script("Just a moment please, I am busy. ", 3.0, "Paris is the capital of France.")
    done, first_audio = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_the_only_slot, args=(server, done, first_audio), daemon=True)
    try:
        holder.start()
        assert first_audio.wait(60), "the first caller never got audio"
        reply = tmp_path / "r.wav"
        with caplog.at_level("INFO"):
            phone = asyncio.run(
                asyncio.wait_for(_one_turn(server, call_question_wav, reply, call_whisper, tmp_path), WAIT)
            )
        assert done.wait(30)
    finally:
        server.stop()
    assert "server busy; asking again in 4.0s" in caplog.text
    assert [t.outcome.value for t in phone.turns] == ["done"]
    text, _ = heard(call_whisper, reply)
    assert "paris" in words(text), text


def test_busy_with_a_long_retry_after_gets_the_offline_voice_at_once(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path, caplog: Any
) -> None:
    server = start_server(tmp_path / "srv", call_standin.url, {"limits": {"queue_depth": 1, "retry_after_seconds": 30}})
    call_standin.script("Hold on, this takes a while. ", 20.0, "Done now.")
    done, first_audio = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_the_only_slot, args=(server, done, first_audio), daemon=True)
    try:
        holder.start()
        assert first_audio.wait(60), "the first caller never got audio"
        reply = tmp_path / "r.wav"
        with caplog.at_level("INFO"):
            phone = asyncio.run(
                asyncio.wait_for(_one_turn(server, call_question_wav, reply, call_whisper, tmp_path), WAIT)
            )
    finally:
        server.stop()
    assert "asking again" not in caplog.text
    assert [t.outcome.value for t in phone.turns] == ["busy"]
    text, _ = heard(call_whisper, reply)
    assert len(words(text) & OFFLINE_WORDS) >= 3, text


# --------------------------------------------------------------------------- the server goes and comes back


def test_server_down_then_back_the_phone_recovers_by_itself(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    port = free_port()
    first = start_server(tmp_path / "a", call_standin.url, port=port)
    first.kill()  # the GPU box is gone before anyone calls
    call_standin.script("Paris is the capital of France. ")
    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    servers = [first]
    try:
        asyncio.run(
            asyncio.wait_for(
                _recovery_scenario(first, servers, call_standin, call_whisper, call_question_wav, tmp_path, factory),
                WAIT * 2,
            )
        )
    finally:
        factory.close()
        Device.pin_factory = previous
        for server in servers:
            server.stop()
    text, _ = heard(call_whisper, tmp_path / "r.wav")
    said = words(text)
    assert len(said & OFFLINE_WORDS) >= 3, text  # the first call: the phone's own voice
    assert {"capital", "france"} <= said, text  # the second call: the server's answer (Paris is the ...)


async def _recovery_scenario(
    first: ServerProcess,
    servers: list[ServerProcess],
    standin: OllamaStandIn,
    whisper: Any,
    question: Path,
    tmp_path: Path,
    factory: Any,
) -> None:
    from pi_client.audio_in import WavFileSource
    from pi_client.audio_out import WavFileSink
    from pi_client.call import State
    from pi_client.endpoint import listen
    from pi_client.health import HealthMonitor
    from pi_client.hook import GpioHook
    from pi_client.offline_voice import OfflineVoice
    from pi_client.phone import Phone
    from pi_client.server_client import ServerClient
    from pi_client.vad import SileroVad

    client_cfg = {"connect_timeout_seconds": 1.0, "health_interval_seconds": 0.5, "health_backoff_max_seconds": 0.5}
    pi = config_from_dict({"pi": {"cache_dir": str(tmp_path / "cache"), "client": client_cfg}}).pi
    voice = OfflineVoice(pi.offline_voice, pi.greeting, pi.cache_dir)
    vad = SileroVad(pi.vad.threshold)
    talk: asyncio.Queue[None] = asyncio.Queue()

    async def listen_once() -> Any:
        await talk.get()  # the caller speaks when the test says so
        source = WavFileSource(question)
        try:
            return await listen(source, vad, pi.vad)
        finally:
            source.close()

    sink = WavFileSink(tmp_path / "r.wav")
    client = ServerClient(first.url, first.key, pi.client)
    monitor = HealthMonitor(client.health, pi.client)
    phone = Phone(
        settings=pi,
        listen=listen_once,
        transcribe=whisper.transcribe,
        client=client,
        voice=voice,
        sink=sink,
        monitor=monitor,
    )
    pin = factory.pin(17)

    async def until(condition: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    monitor.start()
    running = asyncio.create_task(phone.run(GpioHook(pi.hook)))
    try:
        chats_before = len(standin.chat_requests())
        pin.drive_low()  # lift: the phone checks the server at once
        await until(lambda: phone.state is State.LISTENING and monitor.up is False, "greeting, server known down")
        talk.put_nowait(None)
        await until(lambda: sink.utterances == 2 and phone.state is State.LISTENING, "the offline message")
        assert len(standin.chat_requests()) == chats_before  # nobody waited on a dead line
        pin.drive_high()
        await until(lambda: phone.state is State.ON_HOOK, "hang-up")

        servers.append(
            await asyncio.to_thread(
                start_server, tmp_path / "b", standin.url, None, int(first.url.rsplit(":", 1)[1]), None, first.key
            )
        )
        await until(lambda: monitor.up is True, "the monitor to see the server back")
        pin.drive_low()
        await until(lambda: phone.state is State.LISTENING, "the second greeting")
        talk.put_nowait(None)
        await until(lambda: len(phone.turns) == 1 and phone.state is State.LISTENING, "the answered turn", WAIT)
        assert phone.turns[-1].outcome is not None and phone.turns[-1].outcome.value == "done"
        pin.drive_high()
        await until(lambda: phone.state is State.ON_HOOK, "the second hang-up")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await monitor.close()
        await sink.close()
        client.close()
