"""Speculative transcription: real Silero VAD, Smart Turn and Whisper on Piper speech (noise off)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from common.config import PiSTTConfig, SmartTurnConfig, VADConfig
from common.wav import write_wav
from pi_client.audio.capture import WavFileSource
from pi_client.turns.endpoint import Utterance, listen
from pi_client.turns.smart_turn import SmartTurn
from pi_client.turns.speculative import SpeculativeTranscriber
from pi_client.turns.stt import WhisperTranscriber
from pi_client.turns.vad import SileroVad
from tests.fixtures_pi import PI_RATE, silence
from tests.helpers import wait_for

PAUSED = ("My name is John and I", "live in Chicago.")  # Smart Turn: 0.01 after the first half, 0.95 after both
COMPLETE = "What is the capital of France?"


class CountingWhisper:
    """The real Whisper, counting the audio it is given."""

    def __init__(self, whisper: WhisperTranscriber) -> None:
        self._whisper = whisper
        self.heard: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, pcm: bytes) -> str:
        with self._lock:
            self.heard.append(len(pcm))
        return self._whisper.transcribe(pcm)


@pytest.fixture(scope="module")
def whisper() -> WhisperTranscriber:
    return WhisperTranscriber(PiSTTConfig(threads=2))


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]", "", text.lower()).split()


def turn(pcm: bytes, tmp_path: Path, speculator: SpeculativeTranscriber, detector: SmartTurn | None) -> Utterance:
    path = tmp_path / "input.wav"
    write_wav(str(path), pcm, PI_RATE)
    listening = listen(
        WavFileSource(path), SileroVad(), VADConfig(), detector, SmartTurnConfig(), speculator=speculator
    )
    utterance = asyncio.run(asyncio.wait_for(listening, timeout=60))
    assert utterance is not None
    return utterance


@pytest.mark.parametrize(("by", "pause"), [("smart_turn", 0.5), ("silence", 0.25)])
def test_a_paused_question_is_one_transcript_from_the_speculation(
    by: str, pause: float, whisper: WhisperTranscriber, piper_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    """Speculation starts in the pause, is dropped when the caller goes on, and starts again at the end.

    Under the silence rule the pause is shorter than its 0.6 s (with Piper's own trailing silence).
    """
    counting = CountingWhisper(whisper)
    speculator = SpeculativeTranscriber(counting)
    detector = SmartTurn(SmartTurnConfig()) if by == "smart_turn" else None
    try:
        first, rest = piper_speech(PAUSED[0]), piper_speech(PAUSED[1])
        utterance = turn(silence(0.5) + first + silence(pause) + rest + silence(2.0), tmp_path, speculator, detector)
        text = speculator.transcribe(utterance.pcm)
    finally:
        speculator.close()
    assert words(text) == words(" ".join(PAUSED))
    assert speculator.used == 1, "the transcript was not the speculative one"
    assert len(counting.heard) <= 2 and max(counting.heard) <= len(utterance.pcm)


def test_under_the_silence_rule_whisper_runs_once_before_the_turn_ends(
    whisper: WhisperTranscriber, piper_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    """The candidate end comes 0.2 s into the 0.6 s silence: that run is the turn's only one."""
    counting = CountingWhisper(whisper)
    speculator = SpeculativeTranscriber(counting)
    try:
        utterance = turn(silence(0.5) + piper_speech(COMPLETE) + silence(2.0), tmp_path, speculator, None)
        text = speculator.transcribe(utterance.pcm)
    finally:
        speculator.close()
    assert words(text) == words(COMPLETE)
    assert len(counting.heard) == 1 and counting.heard[0] < len(utterance.pcm)  # it heard the turn before its end


class HeldWhisper:
    """A stand-in for Whisper that stays "running" until released: the test decides when the worker is busy."""

    def __init__(self) -> None:
        self.busy, self.release = threading.Event(), threading.Event()
        self.seen: list[bytes] = []

    def __call__(self, pcm: bytes) -> str:
        self.seen.append(pcm)
        self.busy.set()
        self.release.wait(10)
        return f"text of {pcm[:1].decode()}{len(pcm)}"


def test_a_dropped_or_superseded_guess_is_never_used() -> None:
    """Mechanics at the seam: the latest candidate wins, a drop forgets it, other audio is transcribed anew."""
    whisper = HeldWhisper()
    busy, release, seen = whisper.busy, whisper.release, whisper.seen
    speculator = SpeculativeTranscriber(whisper)
    try:
        speculator.start(b"a" * 10)  # the worker takes it and stays in "Whisper" until released
        assert busy.wait(10)
        speculator.start(b"b" * 10)
        speculator.drop()  # the caller went on: b is never run
        speculator.start(b"c" * 20)
        speculator.start(b"c" * 30)  # supersedes c20 before it ran
        release.set()
        assert speculator.transcribe(b"c" * 30 + b"\0" * 4) == "text of c30"
        assert speculator.transcribe(b"d" * 10) == "text of d10"  # no guess for it: Whisper runs
    finally:
        speculator.close()
    assert [p[:1] + str(len(p)).encode() for p in seen] == [b"a10", b"c30", b"d10"] and speculator.used == 1


def test_a_guess_not_yet_started_is_transcribed_even_if_a_new_listener_drops_the_speculation() -> None:
    """While the phone transcribes, barge-in's listener starts listening again (which drops the
    speculation): the turn's transcript must not wait for a guess the worker will now never run."""
    whisper = HeldWhisper()
    busy, release = whisper.busy, whisper.release
    speculator = SpeculativeTranscriber(whisper)
    result: list[str] = []
    try:
        speculator.start(b"a" * 10)  # the worker is busy with an older guess
        assert busy.wait(10)
        speculator.start(b"c" * 30)  # the turn's own guess, queued behind it
        transcribing = threading.Thread(target=lambda: result.append(speculator.transcribe(b"c" * 30 + b"\0" * 4)))
        transcribing.start()
        wait_for(lambda: speculator._current is None, 10.0, "the turn's transcription to claim its guess")
        speculator.drop()  # the new listener
        release.set()
        transcribing.join(10)
    finally:
        release.set()
        speculator.close()
    assert result == ["text of c30"]


def test_the_guess_of_an_ended_utterance_survives_the_next_listener() -> None:
    """The phone listens again the moment a turn ends, and that listener drops speculations as it starts:
    the ended utterance's own guess is claimed and still answers it; a longer (merged) utterance never."""
    speculator = SpeculativeTranscriber(lambda pcm: f"text of {len(pcm)}")
    try:
        speculator.start(b"a" * 10)
        speculator.claim(b"a" * 10 + b"\0" * 4)  # listen() returns the utterance: speculation plus silence
        speculator.drop()  # the next listener starts
        assert speculator.transcribe(b"a" * 10 + b"\0" * 4) == "text of 10"
        speculator.start(b"b" * 10)
        speculator.claim(b"b" * 10 + b"\0" * 4)
        speculator.drop()
        assert speculator.transcribe(b"b" * 10 + b"\0" * 4 + b"c" * 10) == "text of 24"  # the caller went on
    finally:
        speculator.close()
    assert speculator.used == 1
