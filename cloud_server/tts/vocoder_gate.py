"""S3Gen for one caller at a time, first windows first.

On a CPU S3Gen is compute-bound: two callers' windows side by side take as long as one after the
other, so the batched path vocodes one caller at a time. The order matters for what callers hear:
a sentence's first window (its first audio) goes before any later window of another caller's
sentence, then arrival order. A waiting caller who hangs up leaves the line (``check`` raises).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable

POLL_SECONDS = 0.1


class VocoderGate:
    """A lock with a priority line: ``acquire(first=True)`` overtakes callers waiting with ``first=False``."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._line: list[tuple[int, int]] = []
        self._order = itertools.count()

    def acquire(self, first: bool, check: Callable[[], None]) -> None:
        """Wait for the vocoder; ``check`` runs while waiting and may raise to give up the place."""
        ticket = (0 if first else 1, next(self._order))
        with self._changed:
            heapq.heappush(self._line, ticket)
            try:
                while self._busy or self._line[0] != ticket:
                    self._changed.wait(POLL_SECONDS)
                    check()
            except BaseException:
                self._line.remove(ticket)
                heapq.heapify(self._line)
                self._changed.notify_all()
                raise
            heapq.heappop(self._line)
            self._busy = True

    def release(self) -> None:
        """Let the next caller in line vocode."""
        with self._changed:
            self._busy = False
            self._changed.notify_all()

    def locked(self) -> bool:
        """Whether someone is vocoding now."""
        with self._changed:
            return self._busy
