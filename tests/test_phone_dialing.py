"""Dialing a character on the phone in-process: the dial on gpiozero's mock pins, touch tones in the
microphone, every tone heard in the earpiece checked by frequency, against a real ``cloud_server``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import requests

from common.config import ClientConfig, RotaryConfig
from common.wav import read_wav_pcm16, resample_pcm16, write_wav
from pi_client.audio.playback import WavFileSink
from pi_client.call.machine import Outcome, State
from pi_client.server.client import ServerClient
from pi_client.server.greetings import GreetingCache
from pi_client.telephone.rotary import GpioDial
from tests.fixtures_pi import PI_RATE, mix, silence, white_noise
from tests.helpers import mock_pins
from tests.helpers import word_set as words
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import build_phone, heard, phone_running, until
from tests.server_rig import ServerProcess, free_port, pi_config, run_pi_client, start_server
from tests.tone_check import keypad, peaks, samples

WAIT = 120.0
HOOK_PIN = 17
DIAL_PIN = 27
LUNA = {
    "display_name": "Luna",
    "persona": "You are Luna, a night owl who loves the moon. Answer in one short sentence.",
    "greeting": "Hi, this is Luna. The moon is bright tonight.",
}
DIRECTORY = {"0": "operator", "7": "luna", "42": "ghost"}
"""``ghost`` is not a character on the server."""
PI = {
    "directory": DIRECTORY,
    "dial": {"digit_timeout_seconds": 1.0, "rotary": {"enabled": True, "pin": DIAL_PIN}},
    "tones": {"off_hook_warning_seconds": 2.0},
}


@pytest.fixture(scope="module")
def luna_server(call_standin: OllamaStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that knows the operator and Luna."""
    server = start_server(
        tmp_path_factory.mktemp("luna-server"), call_standin.url, {"characters": {"operator": {}, "luna": LUNA}}
    )
    yield server
    server.stop()


class Earpiece(WavFileSink):
    """The earpiece as a file, keeping each utterance (a tone, a greeting, a reply) apart as well."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.parts: list[tuple[int, bytearray]] = []

    async def start(self, sample_rate: int) -> None:
        await super().start(sample_rate)
        self.parts.append((sample_rate, bytearray()))

    async def write(self, pcm: bytes) -> None:
        await super().write(pcm)
        if self.parts:
            self.parts[-1][1].extend(pcm)

    def seconds(self, index: int) -> float:
        rate, pcm = self.parts[index]
        return len(pcm) / 2 / rate

    def tone_peaks(self, index: int, count: int, start: float = 0.0, end: float | None = None) -> list[float]:
        """The strongest frequencies of one utterance, between ``start`` and ``end`` seconds into it."""
        rate, pcm = self.parts[index]
        x = samples(bytes(pcm))
        return peaks(x[round(start * rate) : None if end is None else round(end * rate)], count, rate)

    def transcript(self, whisper: Any, index: int) -> str:
        rate, pcm = self.parts[index]
        return str(whisper.transcribe(resample_pcm16(bytes(pcm), rate, PI_RATE)))


async def dial_rotary(pin: Any, number: str, pps: float = 10.0) -> None:
    """Pulse the dial contact for ``number`` at ``pps`` with a 60/40 break/make ratio (pulled up: open = high)."""
    period = 1.0 / pps
    for digit in number:
        for _ in range(10 if digit == "0" else int(digit)):
            pin.drive_high()
            await asyncio.sleep(0.6 * period)
            pin.drive_low()
            await asyncio.sleep(0.4 * period)
        await asyncio.sleep(0.6)  # the dial winds back before the next digit


def test_rotary_7_rings_luna_who_greets_in_her_voice_then_answers_and_0_mid_call_gets_the_operator(
    luna_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    call_question_wav: Path,
    tmp_path: Path,
    caplog: Any,
) -> None:
    call_standin.script("The moon says hello to Paris tonight. ")
    sink = Earpiece(tmp_path / "r.wav")
    luna_chat: list[Any] = []

    async def scenario(pins: Any) -> Any:
        dial = GpioDial(RotaryConfig(enabled=True, pin=DIAL_PIN))
        pins.pin(DIAL_PIN).drive_low()  # the dial at rest: its contact closed to ground
        rig = build_phone(luna_server, call_question_wav, call_whisper, tmp_path, sink, gated=True, pi=PI, dial=dial)
        phone, talk = rig.phone, rig.talk
        assert talk is not None
        async with phone_running(rig):
            pins.pin(HOOK_PIN).drive_low()  # lift
            await until(lambda: phone.state is State.DIALING and sink.parts and sink.seconds(0) > 0.6, "dial tone", 10)
            await dial_rotary(pins.pin(DIAL_PIN), "7")
            await until(lambda: phone.state is State.LISTENING, "Luna's greeting", WAIT)
            talk.put_nowait(None)
            await until(lambda: len(phone.turns) == 1 and phone.state is State.LISTENING, "the answer", WAIT)
            luna_chat.append(call_standin.chat_requests()[-1])
            # Mid-call, the caller dials 0: Luna is left, the operator answers a new conversation.
            call_standin.script("Operator here, Paris is in France. ")
            greeted = len(sink.parts) + 2  # ringback, greeting
            await dial_rotary(pins.pin(DIAL_PIN), "0")
            await until(lambda: len(sink.parts) >= greeted and phone.state is State.LISTENING, "the operator", WAIT)
            talk.put_nowait(None)
            await until(lambda: len(phone.turns) == 2 and phone.state is State.LISTENING, "the operator", WAIT)
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)
            return phone

    with caplog.at_level("INFO"), mock_pins() as pins:
        phone = asyncio.run(asyncio.wait_for(scenario(pins), WAIT * 2))
    # dial tone, ringback, Luna's greeting, her reply; ringback, the operator's greeting, the reply
    assert len(sink.parts) == 7, [(rate, len(pcm)) for rate, pcm in sink.parts]
    assert sink.tone_peaks(0, 2, 0.1, 0.6) == pytest.approx([350.0, 440.0], abs=2.0)  # dial tone
    assert sink.tone_peaks(1, 2) == pytest.approx([440.0, 480.0], abs=6.0)  # ringback, cut at the greeting
    assert sink.seconds(1) < 4.0  # at most a ring or two
    greeting = words(sink.transcript(call_whisper, 2))
    assert {"luna", "moon"} & greeting, greeting
    assert [(t.outcome, t.character) for t in phone.turns] == [(Outcome.DONE, "luna"), (Outcome.DONE, "operator")]
    system = luna_chat[0].messages[0]["content"]
    assert "Luna" in system, system  # the server was asked for Luna
    assert sink.tone_peaks(4, 2) == pytest.approx([440.0, 480.0], abs=6.0)  # ringing the operator
    assert {"operator"} <= words(sink.transcript(call_whisper, 5))
    operator_chat = call_standin.chat_requests()[-1].messages
    assert "operator" in operator_chat[0]["content"] and "Luna" not in str(operator_chat)  # a new conversation
    assert "number 7: luna" in caplog.text and "character=luna" in caplog.text
    assert len(list((tmp_path / "cache" / "greetings").glob("luna-*.wav"))) == 1


def test_touch_tones_for_an_unknown_number_get_sit_intercept_reorder_then_the_howler(
    luna_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    call_question_wav: Path,
    tmp_path: Path,
) -> None:
    touch = tmp_path / "keys.wav"
    pcm = silence(0.8) + keypad("9")
    noise = white_noise(len(pcm) / 2 / PI_RATE, rms=0.003)
    write_wav(str(touch), mix(pcm, noise) + silence(8.0), PI_RATE)
    chats_before = len(call_standin.chat_requests())
    sink = Earpiece(tmp_path / "r.wav")

    async def scenario(pins: Any) -> None:
        rig = build_phone(luna_server, call_question_wav, call_whisper, tmp_path, sink, pi=PI, touch_tones=touch)
        phone = rig.phone
        async with phone_running(rig):
            pins.pin(HOOK_PIN).drive_low()
            await until(lambda: phone.state is State.OFF_HOOK_WARNING and sink.seconds(-1) > 0.5, "the howler", WAIT)
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)

    with mock_pins() as pins:
        asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    assert len(sink.parts) == 5, [(rate, len(pcm)) for rate, pcm in sink.parts]
    assert sink.tone_peaks(0, 2, 0.1, 0.6) == pytest.approx([350.0, 440.0], abs=2.0)
    # Special-information tones: three rising tones, a third of a second each.
    for i, freq in enumerate((913.8, 1370.6, 1776.7)):
        assert sink.tone_peaks(1, 1, 0.33 * i + 0.05, 0.33 * (i + 1) - 0.05) == pytest.approx([freq], abs=4.0)
    said = words(sink.transcript(call_whisper, 2))
    assert {"number", "not", "service"} <= said, said
    assert sink.tone_peaks(3, 2, 0.02, 0.23) == pytest.approx([480.0, 620.0], abs=6.0)  # reorder
    assert sink.seconds(3) == pytest.approx(2.0, abs=0.01)  # off_hook_warning_seconds
    assert sink.tone_peaks(4, 4, 0.01, 0.09) == pytest.approx([1400.0, 2060.0, 2450.0, 2600.0], abs=15.0)
    assert len(call_standin.chat_requests()) == chats_before  # nobody was called


def test_server_unreachable_touch_tone_7_rings_then_the_phone_greets_in_its_own_voice(
    call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    touch = tmp_path / "keys.wav"
    write_wav(str(touch), silence(0.5) + keypad("7") + silence(8.0), PI_RATE)
    nobody = SimpleNamespace(url=f"http://127.0.0.1:{free_port()}", key="some-key")
    sink = Earpiece(tmp_path / "r.wav")

    async def scenario(pins: Any) -> None:
        rig = build_phone(nobody, call_question_wav, call_whisper, tmp_path, sink, gated=True, pi=PI, touch_tones=touch)
        phone = rig.phone
        async with phone_running(rig):
            pins.pin(HOOK_PIN).drive_low()
            await until(lambda: phone.state is State.LISTENING, "the greeting", WAIT)
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)

    with mock_pins() as pins:
        asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    assert len(sink.parts) == 3, [(rate, len(pcm)) for rate, pcm in sink.parts]  # dial, ringback, greeting
    assert sink.tone_peaks(0, 2, 0.1, 0.45) == pytest.approx([350.0, 440.0], abs=2.0)
    assert sink.tone_peaks(1, 2) == pytest.approx([440.0, 480.0], abs=6.0)
    assert {"go", "ahead", "listening"} <= words(sink.transcript(call_whisper, 2))  # pi.greeting, Piper


def test_a_quiet_spell_asks_are_you_still_there_then_the_busy_tone(
    call_server: ServerProcess, call_whisper: Any, tmp_path: Path
) -> None:
    quiet = tmp_path / "quiet.wav"
    write_wav(str(quiet), silence(1.0), PI_RATE)
    sink = Earpiece(tmp_path / "r.wav")

    async def scenario(pins: Any) -> None:
        pi = {"tones": {"off_hook_warning_seconds": 2.0}}
        rig = build_phone(call_server, quiet, call_whisper, tmp_path, sink, pi=pi)
        phone = rig.phone
        async with phone_running(rig):
            pins.pin(HOOK_PIN).drive_low()
            await until(lambda: phone.state is State.OFF_HOOK_WARNING, "the howler", WAIT)
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)

    with mock_pins() as pins:
        asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    assert len(sink.parts) >= 3, [(rate, len(pcm)) for rate, pcm in sink.parts]  # greeting, still there?, busy, ...
    said = words(sink.transcript(call_whisper, 1))
    assert {"still", "there"} <= said, said
    assert sink.tone_peaks(2, 2, 0.05, 0.45) == pytest.approx([480.0, 620.0], abs=4.0)  # busy: 0.5 s on
    rate, pcm = sink.parts[2]
    off = samples(bytes(pcm))[round(0.55 * rate) : round(0.95 * rate)]
    assert np.abs(off).max() == 0  # ... 0.5 s off


def test_a_caller_saying_goodbye_hears_the_reply_then_the_busy_tone(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    piper_speech: Callable[[str], bytes],
    tmp_path: Path,
) -> None:
    goodbye = tmp_path / "bye.wav"
    write_wav(str(goodbye), silence(0.6) + piper_speech("Thank you very much, goodbye.") + silence(1.5), PI_RATE)
    call_standin.script("You are welcome, have a lovely evening. ")
    sink = Earpiece(tmp_path / "r.wav")

    async def scenario(pins: Any) -> Any:
        pi = {"tones": {"off_hook_warning_seconds": 2.0}}
        rig = build_phone(call_server, goodbye, call_whisper, tmp_path, sink, gated=True, pi=pi)
        phone, talk = rig.phone, rig.talk
        assert talk is not None
        async with phone_running(rig):
            pins.pin(HOOK_PIN).drive_low()
            await until(lambda: phone.state is State.LISTENING, "the greeting", WAIT)
            talk.put_nowait(None)
            await until(lambda: phone.state is State.OFF_HOOK_WARNING, "the end of the call", WAIT)
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)
            return phone

    with mock_pins() as pins:
        phone = asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    assert phone.turns[-1].outcome is Outcome.DONE
    assert len(sink.parts) == 4, [(rate, len(pcm)) for rate, pcm in sink.parts]  # greeting, reply, busy, howler
    assert {"welcome", "evening"} <= words(sink.transcript(call_whisper, 1))
    assert sink.tone_peaks(2, 2, 0.05, 0.45) == pytest.approx([480.0, 620.0], abs=4.0)


# --------------------------------------------------------------------------- the greeting cache


class CountingClient(ServerClient):
    """The real client, counting greeting downloads."""

    greetings = 0

    def greeting(self, character_id: str) -> bytes:
        self.greetings += 1
        return super().greeting(character_id)


def test_greetings_are_cached_per_character_and_voice(
    luna_server: ServerProcess, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    client = CountingClient(luna_server.url, luna_server.key, ClientConfig())
    cache = GreetingCache(client, tmp_path)
    try:
        first = cache.fetch("luna")
        assert first.known and first.pcm is not None and client.greetings == 1
        assert cache.fetch("luna").pcm == first.pcm and client.greetings == 1  # from the phone's disk
        assert not cache.fetch("ghost").known  # the server has no such character
        # Luna gets another voice: the next call fetches her greeting again, the old file goes.
        auth = {"Authorization": f"Bearer {luna_server.key}"}
        upload = requests.post(
            luna_server.url + "/voices?id=night",
            data=call_question_wav.read_bytes(),
            headers={**auth, "Content-Type": "audio/wav"},
            timeout=60,
        )
        assert upload.status_code in (200, 201), upload.text
        voice_url = luna_server.url + "/characters/luna/voice"
        switched = requests.post(voice_url, json={"voice": "night"}, headers=auth, timeout=60)
        assert switched.status_code == 200, switched.text
        assert cache.fetch("luna").pcm is not None and client.greetings == 2
        assert len(list((tmp_path / "greetings").glob("luna-*.wav"))) == 1
        requests.post(voice_url, json={"voice": None}, headers=auth, timeout=60)
    finally:
        client.close()
    gone = ServerClient(f"http://127.0.0.1:{free_port()}", "k", ClientConfig(connect_timeout_seconds=1.0))
    try:
        unreachable = GreetingCache(gone, tmp_path).fetch("luna")
    finally:
        gone.close()
    assert unreachable.known and unreachable.pcm is None  # the phone's own voice will greet


# --------------------------------------------------------------------------- file mode: --dial


def test_file_mode_dial_7_gets_the_reply_from_luna(
    luna_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    call_question_wav: Path,
    tmp_path: Path,
) -> None:
    call_standin.script("The moon is lovely over Paris in the spring. ")
    reply = tmp_path / "r.wav"
    config = pi_config(tmp_path, directory=DIRECTORY)
    result = run_pi_client(config, luna_server.url, luna_server.key, call_question_wav, reply, "--dial", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Luna" in call_standin.chat_requests()[-1].messages[0]["content"]
    turn_line = next(line for line in result.stderr.splitlines() if "turn: heard=" in line)
    assert turn_line.endswith("character=luna"), turn_line  # the server's X-Character
    assert {"moon", "lovely"} <= words(heard(call_whisper, reply)[0])


def test_file_mode_dialing_an_unknown_number_hears_the_intercept(
    luna_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    chats_before = len(call_standin.chat_requests())
    reply = tmp_path / "r.wav"
    config = pi_config(tmp_path, directory=DIRECTORY)
    result = run_pi_client(config, luna_server.url, luna_server.key, call_question_wav, reply, "--dial", "9")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "number 9: not in service" in result.stderr
    pcm, rate = read_wav_pcm16(str(reply))
    x = samples(pcm)
    assert peaks(x[round(0.05 * rate) : round(0.28 * rate)], 1, rate) == pytest.approx([913.8], abs=4.0)  # SIT
    said = words(call_whisper.transcribe(resample_pcm16(pcm[round(1.0 * rate) * 2 :], rate, PI_RATE)))
    assert {"number", "not", "service"} <= said, said
    assert len(call_standin.chat_requests()) == chats_before


def test_a_touch_tone_0_heard_during_lunas_call_switches_to_the_operator(
    luna_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, tmp_path: Path
) -> None:
    touch = tmp_path / "keys.wav"
    write_wav(str(touch), silence(0.5) + keypad("7") + silence(8.0), PI_RATE)
    mid_call = tmp_path / "zero.wav"  # what the caller's microphone hears once Luna listens: a key, in line noise
    pcm = silence(0.6) + keypad("0") + silence(1.5)
    write_wav(str(mid_call), mix(pcm, white_noise(len(pcm) / 2 / PI_RATE, rms=0.003)), PI_RATE)
    chats_before = len(call_standin.chat_requests())
    sink = Earpiece(tmp_path / "r.wav")

    async def scenario(pins: Any) -> None:
        rig = build_phone(luna_server, mid_call, call_whisper, tmp_path, sink, gated=True, pi=PI, touch_tones=touch)
        phone, talk = rig.phone, rig.talk
        assert talk is not None
        async with phone_running(rig):
            pins.pin(HOOK_PIN).drive_low()
            await until(lambda: phone.state is State.LISTENING, "Luna's greeting", WAIT)
            talk.put_nowait(None)  # the caller presses 0
            await until(lambda: len(sink.parts) >= 5 and phone.state is State.LISTENING, "the operator", WAIT)
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)

    with mock_pins() as pins:
        asyncio.run(asyncio.wait_for(scenario(pins), WAIT))
    # dial tone, ringback, Luna's greeting; ringback, the operator's greeting
    assert len(sink.parts) == 5, [(rate, len(pcm)) for rate, pcm in sink.parts]
    assert {"luna", "moon"} & words(sink.transcript(call_whisper, 2))
    assert sink.tone_peaks(3, 2) == pytest.approx([440.0, 480.0], abs=6.0)  # ringing the operator
    assert {"operator"} <= words(sink.transcript(call_whisper, 4))
    assert len(call_standin.chat_requests()) == chats_before  # the key was not taken for words
