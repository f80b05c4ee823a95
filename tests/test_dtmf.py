"""DTMF: digits decode exactly in noise and between Piper speech; speech alone, off-tune and short tones do not."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pi_client.telephone.dtmf import DtmfDecoder
from tests.fixtures_pi import PI_RATE, mix, silence, white_noise
from tests.tone_check import dtmf_tone as tone
from tests.tone_check import keypad

SPEECH = [
    "Hello, this is the operator. Which number would you like me to connect you to?",
    "Nine, one, one. Please hold the line while I try that for you.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Beep boop, whistle and hum: a high pitched voice singing ooh and eee all day long.",
    "Ooooooh. Eeeeeee. Aaaaaah. Mmmmmm.",
    "Do re mi fa so la ti do, la la la la la.",
]
"""Ordinary talk, plus held vowels and sung notes: the harmonics most like a tone pair."""


def decode(pcm: bytes, chunk: int = 512) -> str:
    decoder = DtmfDecoder(PI_RATE)
    keys: list[str] = []
    for i in range(0, len(pcm), chunk * 2):
        keys += decoder.feed(pcm[i : i + chunk * 2])
    return "".join(keys)


def test_every_key_decodes_once_in_noise() -> None:
    keys = "1234567890*#ABCD"
    pcm = silence(0.2) + keypad(keys) + silence(0.2)
    assert decode(mix(pcm, white_noise(len(pcm) / 2 / PI_RATE, rms=0.02, seed=3))) == keys  # ~20 dB SNR


@pytest.mark.parametrize("chunk", [1, 160, 512, 4096])
def test_chunk_size_does_not_matter(chunk: int) -> None:
    assert decode(keypad("2580", on=0.045, off=0.045), chunk=chunk) == "2580"


def test_minimum_tone_and_pause_are_40_ms() -> None:
    assert decode(keypad("55555", on=0.040, off=0.040)) == "55555"  # Q.24: must accept
    assert decode(keypad("55555", on=0.020, off=0.050)) == ""  # too short: a click, not a key


def test_a_short_break_inside_a_tone_is_still_one_key() -> None:
    pcm = tone("8", 0.1) + silence(0.008) + tone("8", 0.1)
    assert decode(pcm) == "8"


@pytest.mark.parametrize("dev", [-0.015, 0.015])
def test_tones_within_1_5_percent_are_accepted(dev: float) -> None:
    assert decode(b"".join(tone(k, 0.06, dev, dev) + silence(0.06) for k in "159D")) == "159D"
    assert decode(b"".join(tone(k, 0.06, dev, -dev) + silence(0.06) for k in "3*0#")) == "3*0#"


@pytest.mark.parametrize(("row_dev", "col_dev"), [(0.035, 0), (-0.035, 0), (0, 0.035), (0, -0.035)])
def test_tones_off_by_3_5_percent_are_rejected(row_dev: float, col_dev: float) -> None:
    assert decode(b"".join(tone(k, 0.1, row_dev, col_dev) + silence(0.06) for k in "1590#")) == ""


def test_twist_limits() -> None:
    assert decode(tone("6", 0.08, twist_db=-7.0)) == "6"  # high group 7 dB weaker: normal twist, accepted
    assert decode(tone("6", 0.08, twist_db=3.0)) == "6"  # high group 3 dB stronger: reverse twist, accepted
    assert decode(tone("6", 0.08, twist_db=-11.0)) == ""
    assert decode(tone("6", 0.08, twist_db=7.0)) == ""


def test_speech_alone_is_no_digits(piper_speech: Callable[[str], bytes]) -> None:
    for text in SPEECH:
        speech = piper_speech(text)
        assert decode(speech) == "", text
        assert decode(mix(speech, white_noise(len(speech) / 2 / PI_RATE, rms=0.01, seed=5))) == "", text


def test_digits_between_speech_decode_exactly(piper_speech: Callable[[str], bytes]) -> None:
    before, after = piper_speech(SPEECH[0]), piper_speech(SPEECH[1])
    pcm = before + keypad("7", on=0.05, off=0.05) + silence(0.3) + keypad("42#", on=0.06) + after
    noisy = mix(pcm, white_noise(len(pcm) / 2 / PI_RATE, rms=0.01, seed=7))
    assert decode(noisy) == "742#"
