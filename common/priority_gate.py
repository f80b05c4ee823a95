"""A few places at a shared model, and a line where a caller's first audio goes first.

A voice model shared by several callers is used a step at a time (a sentence, a vocoder window).
The order of the steps decides what callers hear: a step that makes a caller's *first* audio ends a
silence, while another caller's later step only adds to audio that is already playing (and usually
far ahead of it: Piper speaks 10-20x faster than real time). So waiting steps that make a first
audio overtake the others, then arrival order. A waiting caller who hangs up leaves the line
(``check`` raises).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Generator, Iterator
from contextvars import ContextVar
from typing import TypeVar

_T = TypeVar("_T")
_FIRST_AUDIO: ContextVar[bool] = ContextVar("first_audio", default=False)

POLL_SECONDS = 0.1
"""How often a waiting caller runs its ``check`` (a release wakes it at once)."""


class PriorityGate:
    """``slots`` places; ``acquire(first=True)`` overtakes callers waiting with ``first=False``."""

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"a gate needs at least one place, got {slots}")
        self.slots = slots
        self._changed = threading.Condition()
        self._busy = 0
        self._line: list[tuple[int, int]] = []
        self._order = itertools.count()

    def acquire(self, first: bool, check: Callable[[], None] | None = None) -> None:
        """Wait for a place; ``check`` runs while waiting and may raise to give up the place in line."""
        ticket = (0 if first else 1, next(self._order))
        with self._changed:
            heapq.heappush(self._line, ticket)
            try:
                while self._busy >= self.slots or self._line[0] != ticket:
                    self._changed.wait(POLL_SECONDS)
                    if check is not None:
                        check()
            except BaseException:
                self._line.remove(ticket)
                heapq.heapify(self._line)
                self._changed.notify_all()
                raise
            heapq.heappop(self._line)
            self._busy += 1
            if self._busy < self.slots and self._line:
                self._changed.notify_all()  # a place is still free: the next in line may take it too

    def release(self) -> None:
        """Give the place to the next in line."""
        with self._changed:
            self._busy -= 1
            self._changed.notify_all()

    def busy(self) -> int:
        """How many places are taken now."""
        with self._changed:
            return self._busy

    def waiting(self) -> int:
        """How many callers wait in line now."""
        with self._changed:
            return len(self._line)


def makes_first_audio() -> bool:
    """Whether the speech being made now is its caller's first audio (see ``as_first_audio``)."""
    return _FIRST_AUDIO.get()


def as_first_audio(chunks: Iterator[_T]) -> Generator[_T, None, None]:
    """Iterate ``chunks`` marked as the caller's first audio: a voice asked for them waits with ``first=True``.

    The mark travels with the thread through every wrapper around the voice, and only while a chunk
    is being made (not while the caller sends it on). Closing this closes ``chunks``.
    """
    try:
        while True:
            token = _FIRST_AUDIO.set(True)
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                _FIRST_AUDIO.reset(token)
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
