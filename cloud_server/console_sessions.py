"""Console sign-ins: a random token in an HttpOnly cookie, its CSRF token and expiry kept here, in memory.

The cookie carries a random token, never the API key; the server keeps only the token's SHA-256, so
signing out (or a restart) ends the session for good, which a signed cookie could not do.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

MAX_SESSIONS: Final = 64
"""More sign-ins than this drop the oldest: a forgotten browser cannot grow memory without end."""


@dataclass(frozen=True)
class ConsoleSession:
    """One signed-in browser."""

    csrf: str
    """Sent back by the page on every change (form field or ``X-CSRF-Token`` header)."""
    expires_at: float


class ConsoleSessions:
    """Signed-in browsers by hashed token; safe to use from several request threads."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._by_hash: dict[str, ConsoleSession] = {}
        self._lock = threading.Lock()

    def open(self) -> tuple[str, ConsoleSession]:
        """A new session: the token for the cookie, and the session (its CSRF token)."""
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(csrf=secrets.token_urlsafe(32), expires_at=self._clock() + self.ttl_seconds)
        with self._lock:
            self._drop_expired()
            while len(self._by_hash) >= MAX_SESSIONS:
                oldest = min(self._by_hash, key=lambda h: self._by_hash[h].expires_at)
                del self._by_hash[oldest]
            self._by_hash[_hash(token)] = session
        return token, session

    def find(self, token: str) -> ConsoleSession | None:
        """The live session for ``token``; None when unknown, signed out or expired."""
        with self._lock:
            session = self._by_hash.get(_hash(token))
            if session is not None and session.expires_at <= self._clock():
                del self._by_hash[_hash(token)]
                return None
            return session

    def close(self, token: str) -> None:
        """Sign out: the token stops working at once."""
        with self._lock:
            self._by_hash.pop(_hash(token), None)

    def __len__(self) -> int:
        with self._lock:
            self._drop_expired()
            return len(self._by_hash)

    def _drop_expired(self) -> None:
        now = self._clock()
        for token_hash in [h for h, s in self._by_hash.items() if s.expires_at <= now]:
            del self._by_hash[token_hash]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
