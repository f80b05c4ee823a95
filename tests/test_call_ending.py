"""How a call ends from the far side, or from a key: the phone against a real ``cloud_server``, the
hook on gpiozero's mock pins, every tone in the earpiece checked by frequency and cadence.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from common.config import RotaryConfig
from common.wav import write_wav
from pi_client.call.machine import Outcome, State
from pi_client.telephone.rotary import GpioDial
from tests.fixtures_pi import PI_RATE, mix, silence, white_noise
from tests.helpers import mock_pins
from tests.helpers import word_set as words
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import build_phone, phone_running, until
from tests.server_rig import ServerProcess, start_server
from tests.test_phone_dialing import Earpiece, dial_rotary
from tests.tone_check import keypad, samples

WAIT = 120.0
HOOK_PIN = 17
PI = {"tones": {"off_hook_warning_seconds": 2.0}}


def assert_cadence(sink: Earpiece, index: int, on: float, freqs: list[float]) -> None:
    """Utterance ``index`` is ``freqs`` for ``on`` seconds, then silence as long, twice over."""
    rate, pcm = sink.parts[index]
    x = samples(bytes(pcm))
    for cycle in range(2):
        start = cycle * 2 * on
        assert sink.tone_peaks(index, len(freqs), start + 0.02, start + on - 0.02) == pytest.approx(freqs, abs=6.0)
        off = x[round((start + on + 0.01) * rate) : round((start + 2 * on - 0.01) * rate)]
        assert off.size and np.abs(off).max() == 0, f"cycle {cycle}: not silent"


async def call(rig: Any, pins: Any, ended: State = State.OFF_HOOK_WARNING) -> Any:
    """Lift, let the call run until ``ended``, hang up; the phone."""
    phone = rig.phone
    async with phone_running(rig):
        pins.pin(HOOK_PIN).drive_low()
        await until(lambda: phone.state is ended, ended.value, WAIT)
        pins.pin(HOOK_PIN).drive_high()
        await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)
        return phone


def test_the_character_hangs_up_its_goodbye_is_heard_without_the_marker_then_the_busy_tone(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    # The marker split over tokens, and words after it that must never be spoken.
    call_standin.script("Paris, my dear. It was lovely talking, goodbye. [", "END", " CALL", "] Secret words.")
    sink = Earpiece(tmp_path / "r.wav")

    async def scenario(pins: Any) -> Any:
        return await call(build_phone(call_server, call_question_wav, call_whisper, tmp_path, sink, pi=PI), pins)

    with mock_pins() as pins:
        phone = asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    system = call_standin.chat_requests()[-1].messages[0]["content"]
    assert "[END CALL]" in system  # the LLM was told how to end a call
    assert len(sink.parts) == 4, [(rate, len(pcm)) for rate, pcm in sink.parts]  # greeting, reply, busy, howler
    said = words(sink.transcript(call_whisper, 1))
    assert {"paris", "goodbye"} <= said and not {"end", "call", "secret"} & said, said
    assert_cadence(sink, 2, 0.5, [480.0, 620.0])  # busy
    turn = phone.turns[-1]
    assert turn.outcome is Outcome.DONE and turn.call_ended
    session = requests.get(
        f"{call_server.url}/sessions/{turn.session_id}",
        headers={"Authorization": f"Bearer {call_server.key}"},
        timeout=10,
    ).json()
    assert session["call_ended"] is True
    assert session["last_reply"] == "Paris, my dear. It was lovely talking, goodbye."


def test_the_server_dying_mid_reply_is_a_dropped_call_with_the_reorder_tone(
    call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    server = start_server(tmp_path / "doomed", call_standin.url)
    try:
        call_standin.script("Paris is the capital of France, a lovely old city. ", 30.0, "It never gets here.")
        sink = Earpiece(tmp_path / "r.wav")

        async def scenario(pins: Any) -> Any:
            rig = build_phone(server, call_question_wav, call_whisper, tmp_path, sink, pi=PI)

            async def kill_when_the_reply_plays() -> None:
                await until(lambda: len(sink.parts) >= 2 and sink.seconds(1) > 0.5, "the reply", WAIT)
                await asyncio.to_thread(server.kill)

            killer = asyncio.create_task(kill_when_the_reply_plays())
            try:
                return await call(rig, pins)
            finally:
                await asyncio.gather(killer, return_exceptions=True)

        with mock_pins() as pins:
            phone = asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    finally:
        server.stop()
    assert phone.turns[-1].outcome is Outcome.BROKEN
    assert len(sink.parts) == 4, [(rate, len(pcm)) for rate, pcm in sink.parts]  # greeting, reply, reorder, howler
    assert {"paris", "capital"} <= words(sink.transcript(call_whisper, 1))
    assert_cadence(sink, 2, 0.25, [480.0, 620.0])  # reorder: the fast busy


def test_star_pressed_during_the_call_ends_it_with_the_busy_tone_and_asks_nothing(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, tmp_path: Path
) -> None:
    star = tmp_path / "star.wav"
    pcm = silence(0.6) + keypad("*") + silence(2.0)
    write_wav(str(star), mix(pcm, white_noise(len(pcm) / 2 / PI_RATE, rms=0.003)), PI_RATE)
    chats_before = len(call_standin.chat_requests())
    sink = Earpiece(tmp_path / "r.wav")

    async def scenario(pins: Any) -> Any:
        return await call(build_phone(call_server, star, call_whisper, tmp_path, sink, pi=PI), pins)

    with mock_pins() as pins:
        phone = asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    assert len(sink.parts) == 3, [(rate, len(pcm)) for rate, pcm in sink.parts]  # greeting, busy, howler
    assert_cadence(sink, 1, 0.5, [480.0, 620.0])
    assert len(call_standin.chat_requests()) == chats_before and not phone.turns  # nobody was asked


def test_a_rotary_phone_ends_the_call_with_its_end_key_digit(
    call_server: ServerProcess, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    dial_pin = 27
    pi = {**PI, "dial": {"end_call_key": "9", "rotary": {"enabled": True, "pin": dial_pin}}}  # no directory
    sink = Earpiece(tmp_path / "r.wav")

    async def scenario(pins: Any) -> None:
        dial = GpioDial(RotaryConfig(enabled=True, pin=dial_pin))
        pins.pin(dial_pin).drive_low()  # the dial at rest
        rig = build_phone(call_server, call_question_wav, call_whisper, tmp_path, sink, gated=True, pi=pi, dial=dial)
        phone = rig.phone
        async with phone_running(rig):
            pins.pin(HOOK_PIN).drive_low()
            await until(lambda: phone.state is State.LISTENING, "the greeting", WAIT)
            await dial_rotary(pins.pin(dial_pin), "9")
            await until(lambda: phone.state is State.OFF_HOOK_WARNING, "the howler", WAIT)
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)

    with mock_pins() as pins:
        asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    assert len(sink.parts) == 3, [(rate, len(pcm)) for rate, pcm in sink.parts]  # greeting, busy, howler
    assert_cadence(sink, 1, 0.5, [480.0, 620.0])
