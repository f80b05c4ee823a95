"""Per-caller conversation history: bounded turns, idle expiry, a bounded number of sessions.

Each session's latest reply also keeps its timeline (sentence → audio seconds), so the phone can
say how much of it the caller heard and the history keeps only that (``clip_reply``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cloud_server.pipeline.heard import ReplyTimeline
from common.config import SessionConfig

_LOGGER = logging.getLogger(__name__)
_SUPERSEDE_WAIT_SECONDS = 3.0
"""How long a new turn waits for its session's previous reply to stop and be recorded, in seconds."""


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
        self._replies: OrderedDict[str, ReplyTimeline] = OrderedDict()
        """Each session's latest reply, in progress or done; as many as sessions are kept."""
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        for sid in [s for s, sess in self._sessions.items() if now - sess.updated > self._cfg.ttl_seconds]:
            del self._sessions[sid]
            reply = self._replies.get(sid)
            if reply is not None and reply.closed.is_set():  # not a reply of the session starting again now
                del self._replies[sid]

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

    def start_reply(self, session_id: str, cancel: threading.Event) -> ReplyTimeline:
        """A new reply in ``session_id``: its timeline replaces the previous reply's.

        A previous reply still in progress is stopped and, for at most ``_SUPERSEDE_WAIT_SECONDS``,
        waited for: the server notices a closed connection only at its next write, and the new turn
        must read the history with that reply in it (clipped to what was heard).
        """
        with self._lock:
            previous = self._replies.get(session_id)
        if previous is not None and not previous.closed.is_set():
            previous.cancel.set()
            if not previous.closed.wait(_SUPERSEDE_WAIT_SECONDS):
                _LOGGER.warning("Session %s: the previous reply did not end in time; answering without it", session_id)
        timeline = ReplyTimeline(cancel)
        with self._lock:
            self._replies[session_id] = timeline
            self._replies.move_to_end(session_id)
            while len(self._replies) > self._cfg.max_sessions:
                self._replies.popitem(last=False)
        return timeline

    def clip_reply(self, session_id: str, heard_seconds: float, withdrawn: bool = False) -> tuple[str, bool] | None:
        """The caller heard ``heard_seconds`` of the session's latest reply: (text heard, cut), and the
        history keeps that text; None when the session has no reply here. ``withdrawn``: the caller heard
        none of it and went on talking, and the history drops the whole turn (the words come again).

        The reply may still be in progress (the server notices a closed connection only at its next
        write): the cut is then kept on its timeline, and the reply is recorded clipped when it ends.
        """
        with self._lock:
            timeline = self._replies.get(session_id)
        if timeline is None:
            return None
        with timeline.lock:  # against the reply being recorded at this moment
            if withdrawn:
                timeline.withdrawn, timeline.heard_seconds = True, 0.0
                if timeline.recorded is not None:
                    self._drop_last_turn(session_id, timeline.recorded)
                    timeline.recorded = None
                return "", True
            timeline.heard_seconds = heard_seconds
            text, cut = timeline.heard_text()
            if timeline.recorded is not None and cut:
                self._replace_last_reply(session_id, timeline.recorded, text)
                timeline.recorded = text
            return (timeline.recorded or text), cut

    def _drop_last_turn(self, session_id: str, reply: str) -> None:
        with self._lock:
            sess = self._sessions.get(session_id)
            if sess is None or len(sess.history) < 2 or sess.history[-1] != {"role": "assistant", "content": reply}:
                return
            sess.history = sess.history[:-2]
            sess.last_reply = None

    def _replace_last_reply(self, session_id: str, old: str, new: str) -> None:
        with self._lock:
            sess = self._sessions.get(session_id)
            if sess is None or not sess.history or sess.history[-1] != {"role": "assistant", "content": old}:
                return
            sess.history[-1] = {"role": "assistant", "content": new}
            sess.last_reply = new

    def get(self, session_id: str) -> Session | None:
        """The session record, or None when unknown or expired."""
        with self._lock:
            self._expire(self._clock())
            return self._sessions.get(session_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
