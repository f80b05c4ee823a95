"""Barge-in: the call machine's decisions (plain values), and hanging up while the phone listens over itself.

The hang-up calls run a recorded call in-process (the models loaded once for the module) against
the real ``cloud_server`` and put the handset down in each state barge-in adds: while the phone
transcribes with the caller's next words being heard, while the reply plays with the microphone
open, and while the caller's interruption is being heard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.config import config_from_dict
from pi_client.call.machine import (
    Ask,
    BargeIn,
    CallPolicy,
    Heard,
    Listen,
    Played,
    PutDown,
    State,
    StopAll,
    StopPlayback,
    Transcribe,
    Transcribed,
    next_state,
)
from tests.fixtures_pi import PI_RATE, silence
from tests.ollama_standin import OllamaStandIn
from tests.server_rig import ServerProcess
from tests.test_whole_call import INTERRUPTION, LONG_REPLY, MORE, QUESTION, calls_chats, loud_spans, record_call

PCM = b"\x01\x00" * 8


@pytest.mark.parametrize("state", [State.GREETING, State.REPLYING, State.APOLOGIZING, State.STILL_THERE])
def test_talking_over_the_phone_stops_it_and_the_caller_has_the_turn(state: State) -> None:
    assert next_state(state, BargeIn(1.5)) == (State.LISTENING, [StopPlayback(1.5), Listen()])


def test_going_on_before_any_reply_played_keeps_the_words_in_the_turn() -> None:
    assert next_state(State.TRANSCRIBING, BargeIn(0.0, playing=False)) == (
        State.LISTENING,
        [StopPlayback(0.0, went_on=True), Listen()],
    )
    assert next_state(State.REPLYING, BargeIn(0.0, playing=False))[1][0] == StopPlayback(0.0, went_on=True)


@pytest.mark.parametrize("state", [State.LISTENING, State.ON_HOOK, State.ENDED, State.DIALING, State.LAST_CHANCE])
def test_speech_while_the_phone_listens_anyway_is_no_barge_in(state: State) -> None:
    assert next_state(state, BargeIn(0.5)) == (state, [])


def test_after_a_barge_in_the_interruption_is_an_ordinary_turn() -> None:
    state, _ = next_state(State.REPLYING, BargeIn(2.0))
    state, actions = next_state(state, Heard(PCM, True), CallPolicy())
    assert (state, actions) == (State.TRANSCRIBING, [Transcribe(PCM)])
    state, actions = next_state(state, Transcribed("what about Italy"))
    assert state is State.REPLYING and actions == [Ask(text="what about Italy")]
    assert next_state(State.LISTENING, PutDown()) == (State.ON_HOOK, [StopAll()])
    assert next_state(State.GREETING, Played()) == (State.LISTENING, [Listen()])


# --------------------------------------------------------------------------- hanging up, for real


@pytest.fixture(scope="module")
def models(call_whisper: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the phone loads at start-up, loaded once for these calls (the greeting cached once too)."""
    from pi_client.turns.smart_turn import load_turn_detector
    from pi_client.turns.vad import SileroVad

    settings = config_from_dict({}).pi
    return {
        "vad": SileroVad(),
        "turn": load_turn_detector(settings.turns.smart_turn),
        "whisper": call_whisper,
        "cache": tmp_path_factory.mktemp("phone-cache"),
    }


async def _call(
    server: ServerProcess,
    models: dict[str, Any],
    tmp_path: Path,
    recording: Path,
    hang_up: Callable[[Any], bool] | None = None,
    earpiece: Callable[[Any], Any] | None = None,
    speed: float = 3.0,
) -> tuple[Any, Path, list[str], Any]:
    """A recorded call (echo at -10 dB) put down when ``hang_up(phone)`` (None: when it is over);
    the phone, the earpiece file, the tasks left behind, and the sink (``earpiece(line)``, else a LineEarpiece)."""
    from pi_client.audio.offline_voice import OfflineVoice
    from pi_client.audio.recorded_call import LineEarpiece
    from pi_client.call.runner import Phone
    from pi_client.call.whole_call import recorded_call, run_whole_call
    from pi_client.server.fleet import ServerFleet
    from pi_client.turns.endpoint import listen

    settings = config_from_dict({"pi": {"cache_dir": str(models["cache"])}}).pi
    line, microphone = recorded_call(str(recording), -10, speed, settings.turns.echo)

    async def hear(on_frame: Any = None) -> Any:
        tap = microphone.tap()
        try:
            return await listen(
                tap, models["vad"], settings.vad, models["turn"], settings.turns.smart_turn, on_frame=on_frame
            )
        finally:
            tap.close()

    sink = (earpiece or LineEarpiece)(line)
    voice = OfflineVoice(settings.offline_voice, settings.greeting, settings.cache_dir)
    await asyncio.to_thread(voice.prepare)
    client = ServerFleet((server.url,), server.key, settings.client)
    phone = Phone(
        settings=settings,
        listen=hear,
        transcribe=models["whisper"].transcribe,
        client=client,
        voice=voice,
        sink=sink,
        overhear=hear,
    )
    ear = tmp_path / "ear.wav"
    try:
        until = (lambda: hang_up(phone)) if hang_up is not None else None
        await asyncio.wait_for(run_whole_call(phone, line, microphone, ear, until), 120)
        await asyncio.sleep(0.1)
        names = {"overhear", "listen", "listen-audio", "microphone", "reply", "stt", "say"}
        left = [t.get_name() for t in asyncio.all_tasks() if t.get_name() in names and not t.done()]
    finally:
        client.close()
    return phone, ear, left, sink


@pytest.mark.parametrize("moment", ["transcribing", "replying", "paused", "barging-in"])
def test_hang_up_while_the_phone_listens_over_itself_stops_everything(
    moment: str,
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    models: dict[str, Any],
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    from common.wav import read_wav_pcm16

    recording = tmp_path / "call.wav"
    record_call(recording, silence(3.0), piper_speech(QUESTION), silence(6.0), piper_speech(INTERRUPTION), silence(3))
    call_standin.script(*LONG_REPLY, *MORE)
    first = len(calls_chats(call_standin))

    def hang_up(phone: Any) -> bool:
        hearing = phone._overhearing
        if moment == "transcribing":
            return bool(phone.state is State.TRANSCRIBING and hearing.busy)
        if moment == "replying":
            return bool(phone.state is State.REPLYING and hearing.playing)
        if moment == "paused":  # the caller's first word paused the earpiece; not yet a barge-in
            return bool(phone.state is State.REPLYING and phone._sink.paused)
        return bool(phone.state is State.LISTENING and hearing.caller_speaking and phone.turns)

    phone, ear, left, _ = asyncio.run(_call(call_server, models, tmp_path, recording, hang_up))
    assert phone.state is State.ON_HOOK
    assert left == []  # listener, microphone, request, playback: all gone with the handset
    earpiece, _ = read_wav_pcm16(str(ear), PI_RATE)
    spans = loud_spans(earpiece)
    assert spans[-1][1] <= len(earpiece) / 2 / PI_RATE  # nothing was written past the put-down
    chats = calls_chats(call_standin)[first:]
    if moment == "transcribing":
        assert chats == []  # the question never left the phone
    else:
        assert chats and chats[-1].client_closed.wait(15) and not chats[-1].completed
