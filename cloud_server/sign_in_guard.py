"""Slows down guessing the API key at the console's sign-in: an address that keeps giving wrong keys waits.

After ``max_failures`` wrong keys within ``lockout_seconds``, every sign-in from that address (a right
key too) is answered 429 with Retry-After until ``lockout_seconds`` have passed; a right key clears
its count. Memory is bounded: past ``MAX_ADDRESSES`` the stalest address is forgotten.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

MAX_ADDRESSES: Final = 4096


@dataclass
class _Address:
    failures: list[float] = field(default_factory=list)
    """When the recent wrong keys came (clock seconds)."""
    locked_until: float = 0.0


class SignInGuard:
    """Wrong-key counts per client address; safe to use from several request threads."""

    def __init__(self, max_failures: int, lockout_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._clock = clock
        self._by_address: dict[str, _Address] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Whole seconds ``address`` must still wait before signing in again; None when it may now."""
        with self._lock:
            entry = self._by_address.get(address)
            left = entry.locked_until - self._clock() if entry else 0.0
            return math.ceil(left) if left > 0 else None

    def failed(self, address: str) -> None:
        """A wrong key from ``address``: counted, and the address locked out at ``max_failures``."""
        now = self._clock()
        with self._lock:
            entry = self._by_address.pop(address, None) or _Address()
            self._by_address[address] = entry  # most recently seen last
            entry.failures = [t for t in entry.failures if now - t < self.lockout_seconds] + [now]
            if len(entry.failures) >= self.max_failures:
                entry.locked_until = now + self.lockout_seconds
                entry.failures.clear()
            while len(self._by_address) > MAX_ADDRESSES:
                del self._by_address[next(iter(self._by_address))]

    def succeeded(self, address: str) -> None:
        """The right key from ``address``: its count starts again."""
        with self._lock:
            self._by_address.pop(address, None)
