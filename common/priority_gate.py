"""A few places at a shared model, and a line where a caller's first audio goes first.

A voice model shared by several callers is used a step at a time (a sentence, a vocoder window).
The order of the steps decides what callers hear: a step that makes a caller's *first* audio ends a
silence, while another caller's later step only adds to audio that is already playing (and usually
far ahead of it: Piper speaks 10-20x faster than real time). So waiting steps that make a first
audio overtake the others; within each kind, the caller waiting longest (its reply's start, else
its arrival) goes first. Oldest reply first, rather than one later sentence per reply in turn, lets
replies finish one after another: callers that all began at once do not all finish at once and
come back with their next turn at once. A waiting caller who hangs up leaves the line (``check``
raises).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextvars import ContextVar
from typing import TypeVar

_T = TypeVar("_T")
_REPLY: ContextVar[tuple[bool, float] | None] = ContextVar("reply_speech", default=None)

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
        self._line: list[tuple[int, float, int]] = []
        self._order = itertools.count()

    def acquire(self, first: bool, check: Callable[[], None] | None = None, since: float | None = None) -> None:
        """Wait for a place; ``check`` runs while waiting and may raise to give up the place in line.

        ``since``: when the caller's reply began (``time.monotonic()``); None: now.
        """
        ticket = (0 if first else 1, time.monotonic() if since is None else since, next(self._order))
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


def reply_priority() -> tuple[bool, float | None]:
    """(first audio?, when its reply began) for the speech being made now; (False, None) outside a reply."""
    mark = _REPLY.get()
    return (False, None) if mark is None else mark


def as_reply_speech(chunks: Iterator[_T], since: float, first: bool) -> Generator[_T, None, None]:
    """Iterate ``chunks`` marked as a reply's speech: a voice waits for its model with this priority.

    ``since`` is when the reply began (``time.monotonic()``), ``first`` whether the caller has heard
    nothing of it yet. The mark travels with the thread through every wrapper around the voice, and
    holds only while a chunk is being made (not while the caller sends it on). Closing this closes
    ``chunks``.
    """
    try:
        while True:
            token = _REPLY.set((first, since))
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                _REPLY.reset(token)
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
