"""What the caller heard of a reply: a timeline of spoken text → reply audio seconds, and the clip to it.

A caller who interrupts (barge-in) heard only the start of the reply. The phone says how many
seconds of the reply's audio reached the earpiece; the timeline knows which text each stretch of
audio was saying, so the history keeps the sentences played and, of the sentence cut, the words
that fit in the part played (words are placed in a sentence's audio by their share of its
characters: speech runs at a fairly even rate of characters per second).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from common.protocol import CUT_MARK

DEFAULT_CHARS_PER_SECOND: Final = 14.0
"""Speaking rate assumed for a sentence whose audio never finished, when no sentence of the reply did."""


@dataclass
class Spoken:
    """One sentence of the reply and where its audio lies in the reply, in seconds from its first sample."""

    text: str
    start: float
    end: float
    complete: bool = False
    """The sentence's audio was all sent (False: cut while it was still being spoken)."""


def clip(spoken: list[Spoken], heard_seconds: float) -> tuple[str, bool]:
    """The text heard in the first ``heard_seconds`` of the reply, and whether the reply was cut there."""
    finished = [s for s in spoken if s.complete and s.end > s.start]
    rate = DEFAULT_CHARS_PER_SECOND
    if finished:
        rate = sum(len(s.text) for s in finished) / sum(s.end - s.start for s in finished)
    kept: list[str] = []
    for sentence in spoken:
        if sentence.complete and sentence.end <= heard_seconds:
            kept.append(sentence.text)
            continue
        if sentence.start < heard_seconds:
            duration = sentence.end - sentence.start if sentence.complete else max(
                sentence.end - sentence.start, len(sentence.text) / rate
            )
            kept.append(words_within(sentence.text, (heard_seconds - sentence.start) / duration))
        text = " ".join(k for k in kept if k)
        return (f"{text}{CUT_MARK}" if text else CUT_MARK), True
    return " ".join(kept), False


def words_within(text: str, fraction: float) -> str:
    """The leading words of ``text`` that end within its first ``fraction`` of characters."""
    limit = fraction * len(text)
    words = text.split()
    kept: list[str] = []
    end = 0
    for word in words:
        end = text.index(word, end) + len(word)
        if end > limit:
            break
        kept.append(word)
    return " ".join(kept)


class ReplyTimeline:
    """One reply's spoken sentences as they go out, and the caller's cut once the phone reports it.

    Written by the reply's request thread, read by the heard report's: all under one lock, which
    also orders the report against the reply being recorded (see ``SessionStore``).
    """

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        """Stops the reply (set when a newer turn of the same session supersedes it)."""
        self.closed = threading.Event()
        """Set once the reply ended and was recorded (or not)."""
        self.lock = threading.RLock()
        self._spoken: list[Spoken] = []
        self.sent_seconds = 0.0
        """Audio sent so far, in seconds."""
        self.heard_seconds: float | None = None
        """Set by the phone's report: the caller heard this much and no more."""
        self.recorded: str | None = None
        """The reply text as written to the session history, once it is."""
        self.finished = False
        """The reply ran to its end (False: cut by the caller, a hang-up or the length cap)."""
        self.withdrawn = False
        """The phone withdrew the turn (the caller went on talking before hearing any of it): not recorded."""

    def sentence(self, text: str) -> None:
        """A sentence starts to be spoken at the current end of the audio."""
        with self.lock:
            self._spoken.append(Spoken(text.strip(), self.sent_seconds, self.sent_seconds))

    def audio(self, seconds: float) -> None:
        """``seconds`` more audio of the current sentence went out."""
        with self.lock:
            self.sent_seconds += seconds
            if self._spoken:
                self._spoken[-1].end = self.sent_seconds

    def sentence_done(self) -> None:
        """The current sentence's audio is complete."""
        with self.lock:
            if self._spoken:
                self._spoken[-1].complete = True

    def kept_text(self, whole: str) -> str:
        """What the history keeps of a reply whose LLM text was ``whole``: all of it when it ran to its end
        and nobody reported a cut; else what was heard, or as far as its audio went out ("" for none)."""
        with self.lock:
            if self.finished and self.heard_seconds is None:
                return whole
            return self.heard_text()[0] if self.sent_seconds > 0 else ""

    def heard_text(self, seconds: float | None = None) -> tuple[str, bool]:
        """The text within ``seconds`` (default: the reported cut, else all that was sent) and whether cut."""
        with self.lock:
            limit = seconds if seconds is not None else self.heard_seconds
            text, cut = clip(self._spoken, self.sent_seconds if limit is None else limit)
            if not cut and not self.finished and self._spoken:  # cut between two sentences
                return f"{text}{CUT_MARK}", True
            return text, cut
