"""Per-caller conversation history: bounded turns, idle expiry, a bounded number of sessions."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common.config import SessionConfig


@dataclass
class Session:
    session_id: str
    character: str
    history: list[dict[str, str]] = field(default_factory=list)
    last_transcript: str | None = None
    last_reply: str | None = None
    ended: bool = False
    """The character ended the call with its last reply."""
    updated: float = 0.0


class SessionStore:
    """Thread-safe history store; the least recently used session is dropped first."""

    def __init__(self, cfg: SessionConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = cfg
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for sid in [s for s, sess in self._sessions.items() if now - sess.updated > self._cfg.ttl_seconds]:
            del self._sessions[sid]

    def history(self, session_id: str, character: str) -> list[dict[str, str]]:
        """A copy of the history to send to the LLM (empty for a new session or a new character)."""
        with self._lock:
            self._expire(self._clock())
            sess = self._sessions.get(session_id)
            if sess is None or sess.character != character:
                return []
            return [dict(m) for m in sess.history]

    def record(
        self,
        session_id: str,
        character: str,
        user: str,
        reply: str,
        transcript: str | None = None,
        history: Sequence[dict[str, str]] | None = None,
        ended: bool = False,
    ) -> None:
        """Append one turn, trimming to the configured number of turns; ``ended``: the reply ended the call.

        ``history``: the conversation the client sent with the turn; it replaces what this server
        knew, so /sessions shows the whole conversation even when other servers answered before.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            sess = self._sessions.get(session_id)
            if sess is None or sess.character != character:
                sess = Session(session_id=session_id, character=character)
            if history is not None:
                sess.history = [dict(m) for m in history]
            sess.history += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
            sess.history = sess.history[-2 * self._cfg.max_turns :]
            sess.last_reply = reply
            sess.last_transcript = transcript
            sess.ended = ended
            sess.updated = now
            self._sessions[session_id] = sess
            self._sessions.move_to_end(session_id)
            while len(self._sessions) > self._cfg.max_sessions:
                self._sessions.popitem(last=False)

    def drop_oldest_turn(self, session_id: str, character: str) -> None:
        """A failed turn is not written, but the oldest turn still goes.

        The history rotates on every turn, so a session whose history makes the LLM fail (too long,
        or content it rejects) moves on instead of failing the same way on every turn after.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            sess = self._sessions.get(session_id)
            if sess is None or sess.character != character:
                return
            sess.history = sess.history[2:]
            sess.updated = now

    def get(self, session_id: str) -> Session | None:
        """The session record, or None when unknown or expired."""
        with self._lock:
            self._expire(self._clock())
            return self._sessions.get(session_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
