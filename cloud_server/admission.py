"""Back-pressure: a bounded number of replies in progress; one more is refused with 503 + Retry-After."""

from __future__ import annotations

import threading


class ReplySlots:
    """A non-blocking counting gate in front of the one voice model."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._active = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take a slot if one is free; never waits."""
        with self._lock:
            if self._active >= self.capacity:
                return False
            self._active += 1
            return True

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self._active = max(0, self._active - 1)

    @property
    def active(self) -> int:
        """Replies in progress now."""
        with self._lock:
            return self._active
