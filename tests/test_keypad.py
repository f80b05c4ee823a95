"""KeyPad: keys from the dial or the keypad become DigitDialed then NumberDialed, once each, on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from common.wav import write_wav
from pi_client.audio.capture import WavFileSource
from pi_client.call.dialing import KeyPad
from pi_client.call.machine import DigitDialed, EndKey, Event, NumberDialed
from pi_client.telephone.directory import Directory
from tests.fixtures_pi import PI_RATE, silence
from tests.tone_check import dtmf_tone

DIRECTORY = Directory({"0": "operator", "7": "luna", "42": "deep", "420": "smoke"})
TIMEOUT = 0.2
"""The digit timeout in these tests, in seconds."""


async def dial(keys: str, settle: float = TIMEOUT + 0.2) -> list[Event]:
    events: list[Event] = []
    pad = KeyPad(DIRECTORY, TIMEOUT, events.append)
    pad.begin(touch_tones=False)
    for key in keys:
        pad.key(key)
    await asyncio.sleep(settle)
    pad.end()
    return events


def run(keys: str, settle: float = TIMEOUT + 0.2) -> list[Event]:
    return asyncio.run(asyncio.wait_for(dial(keys, settle), 5))


def test_a_one_digit_number_is_complete_at_once_and_still_stops_the_dial_tone_first() -> None:
    assert run("7", settle=0.0) == [DigitDialed(), NumberDialed("7", "luna")]


def test_a_number_that_begins_a_longer_one_completes_after_the_digit_timeout() -> None:
    assert run("42") == [DigitDialed(), NumberDialed("42", "deep")]
    assert run("42", settle=TIMEOUT / 4) == [DigitDialed()]  # still waiting: 420 may follow


def test_hash_completes_at_once_and_an_unknown_number_reaches_nobody() -> None:
    assert run("42#", settle=0.0) == [DigitDialed(), NumberDialed("42", "deep")]
    assert run("9") == [DigitDialed(), NumberDialed("9", None)]


def test_keys_outside_dialing_and_stray_keys_are_ignored() -> None:
    events: list[Event] = []
    pad = KeyPad(DIRECTORY, TIMEOUT, events.append)
    pad.key("7")  # not begun
    assert events == [] and not pad.open
    assert run("*#", settle=0.0) == []


async def in_call(keys: str, end_key: str, directory: Directory = DIRECTORY) -> list[Event]:
    events: list[Event] = []
    pad = KeyPad(directory, TIMEOUT, events.append)
    pad.begin(touch_tones=False, end_key=end_key)
    for key in keys:
        pad.key(key)
    await asyncio.sleep(TIMEOUT + 0.2)
    pad.end()
    return events


def test_during_a_call_the_end_key_first_ends_it_and_later_in_a_number_is_just_a_digit() -> None:
    assert asyncio.run(in_call("*7", "*")) == [EndKey()]  # the call is over: the 7 is not dialed
    assert asyncio.run(in_call("9", "9")) == [EndKey()]  # a rotary phone's end key is a digit
    assert asyncio.run(in_call("49", "9")) == [DigitDialed(), NumberDialed("49", None)]


def test_without_a_directory_digits_mid_call_are_ignored_but_the_end_key_works() -> None:
    assert asyncio.run(in_call("7", "*", Directory({}))) == []
    assert asyncio.run(in_call("7*", "*", Directory({}))) == [EndKey()]


def test_a_number_begun_mid_call_takes_its_next_touch_tones_from_the_microphone_but_not_the_first_again(
    tmp_path: Path,
) -> None:
    # The caller pressed 4 mid-call (heard by the call's TouchToneTap), and it still sounds when the
    # keypad opens the microphone itself: 60 ms of it, long enough to count as a press on its own.
    rest = tmp_path / "rest.wav"
    write_wav(str(rest), dtmf_tone("4", 0.06) + silence(0.1) + dtmf_tone("2", 0.07) + silence(0.3), PI_RATE)

    async def scenario() -> list[Event]:
        events: list[Event] = []
        pad = KeyPad(DIRECTORY, 1.0, events.append, lambda: WavFileSource(rest, realtime=True))
        pad.begin(touch_tones=False, end_key="*")
        pad.key("4")
        pad.listen_for_touch_tones()
        await asyncio.sleep(1.8)
        pad.end()
        return events

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == [DigitDialed(), NumberDialed("42", "deep")]


def test_a_key_pressed_during_the_call_is_silence_to_the_call_not_speech() -> None:
    """The call's VAD must not hear a touch tone: over a reply it would barge in, alone it would be a turn."""
    from pi_client.audio.capture import BLOCK_SAMPLES, AudioSource
    from pi_client.telephone.key_tap import TouchToneTap
    from tests.tone_check import keypad

    pcm = keypad("0", on=0.2, off=0.2)

    class Recorded(AudioSource):
        async def frames(self) -> AsyncIterator[bytes]:
            for i in range(0, len(pcm) - 2 * BLOCK_SAMPLES + 1, 2 * BLOCK_SAMPLES):
                yield pcm[i : i + 2 * BLOCK_SAMPLES]

        def close(self) -> None:
            pass

    keys: list[str] = []

    async def heard() -> list[bytes]:
        return [frame async for frame in TouchToneTap(Recorded(), keys.append).frames()]

    frames = asyncio.run(heard())
    tone_frames = round(0.2 * 16000 / BLOCK_SAMPLES)
    silenced = sum(1 for f in frames[:tone_frames] if not any(f))
    assert keys == ["0"]
    assert silenced >= tone_frames - 2, (silenced, tone_frames)  # all but the tone's first 64 ms
