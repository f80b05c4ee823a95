"""Back-pressure: a bounded number of replies in progress; one more is refused with 503 + Retry-After."""

from __future__ import annotations

import threading
from collections.abc import Callable

from cloud_server.errors import ApiError


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

    def admit(self, retry_after_seconds: int) -> Callable[[], None]:
        """Take a slot or refuse with 503 + Retry-After; returns the slot's release (safe to call twice)."""
        if not self.try_acquire():
            raise ApiError(
                503,
                "busy",
                "All voice slots are busy; try again shortly.",
                {"Retry-After": str(retry_after_seconds)},
            )
        once = threading.Lock()
        released = False

        def release() -> None:
            nonlocal released
            with once:
                if released:
                    return
                released = True
            self.release()

        return release

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self._active = max(0, self._active - 1)

    @property
    def active(self) -> int:
        """Replies in progress now."""
        with self._lock:
            return self._active
