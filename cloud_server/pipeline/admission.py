"""Back-pressure: a bounded number of replies in progress. One more is refused with ``Busy``.

The pipeline knows nothing of HTTP: the route turns ``Busy`` into 503 + Retry-After. Every slot
records when it was taken, so /health can name slots held longer than any reply may last (a leak).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Busy(Exception):
    """Every slot is taken."""


class Slot:
    """One reply in progress; ``release`` gives it back and is safe to call more than once."""

    def __init__(self, on_release: Callable[[Slot], None]) -> None:
        self.taken_at = time.monotonic()
        self._on_release = on_release
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        """Give the slot back (only the first call counts)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._on_release(self)


class ReplySlots:
    """A non-blocking counting gate in front of the one voice model."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: set[Slot] = set()
        self._lock = threading.Lock()

    def take(self) -> Slot:
        """A slot, or ``Busy``; never waits. The caller must release it on every path."""
        with self._lock:
            if len(self._held) >= self.capacity:
                raise Busy
            slot = Slot(self._give_back)
            self._held.add(slot)
            return slot

    @contextmanager
    def hold(self) -> Iterator[Slot]:
        """A slot for the length of a ``with`` block; ``Busy`` when none is free."""
        slot = self.take()
        try:
            yield slot
        finally:
            slot.release()

    def _give_back(self, slot: Slot) -> None:
        with self._lock:
            self._held.discard(slot)

    @property
    def active(self) -> int:
        """Replies in progress now."""
        with self._lock:
            return len(self._held)

    def full(self) -> bool:
        """Whether a ``take`` now would be refused."""
        return self.active >= self.capacity

    def held_longer_than(self, seconds: float) -> int:
        """How many slots were taken more than ``seconds`` ago (no reply lasts that long: a leak)."""
        cutoff = time.monotonic() - seconds
        with self._lock:
            return sum(1 for slot in self._held if slot.taken_at < cutoff)
