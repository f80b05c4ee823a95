"""Several servers seen as one: each turn goes to the least busy that answers, with the call's history.

The phone keeps the conversation (what the caller said and heard, bounded) and sends it with every
turn, so any server can answer any turn: a refused connection, a 5xx or a 503 moves the turn to the
next server without dropping the call. Only when none answers does the phone's own voice speak.
A reply the caller interrupted is kept as far as it was heard (``report_heard``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from common.config import ClientConfig
from common.protocol import ANSWERED_CUE, CUT_MARK
from pi_client.server.client import (
    Busy,
    ReplyRequest,
    ReplyStream,
    ServerClient,
    ServerRejected,
    ServerUnavailable,
)
from pi_client.server.health import FleetHealth, HealthMonitor

_T = TypeVar("_T")

_LOGGER = logging.getLogger(__name__)

MAX_HISTORY_CHARS = 8000
"""The history sent with a turn stays under this many characters (the server's default limit is 16000)."""


class Conversation:
    """The current call's turns as the phone heard them; a new session id starts a new call."""

    def __init__(self, max_turns: int, max_chars: int = MAX_HISTORY_CHARS) -> None:
        self._max_turns = max_turns
        self._max_chars = max_chars
        self.session_id: str | None = None
        self._messages: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def history(self, session_id: str) -> tuple[dict[str, str], ...]:
        """The messages to send with the next turn of ``session_id`` (empty for a new call)."""
        with self._lock:
            if session_id != self.session_id:
                self.session_id, self._messages = session_id, []
            return tuple(dict(m) for m in self._messages)

    def clip_last(self, session_id: str, reply: str) -> None:
        """The latest turn's reply was heard only as far as ``reply``: keep that instead."""
        with self._lock:
            if session_id == self.session_id and self._messages and self._messages[-1]["role"] == "assistant":
                self._messages[-1] = {"role": "assistant", "content": reply}

    def drop_last(self, session_id: str) -> None:
        """The latest turn was withdrawn (the caller heard none of its reply and went on): forget it."""
        with self._lock:
            if session_id == self.session_id and len(self._messages) >= 2:
                self._messages = self._messages[:-2]

    def add(self, session_id: str, user: str, reply: str) -> None:
        """Keep one finished turn, dropping the oldest past ``max_turns`` or ``max_chars``."""
        with self._lock:
            if session_id != self.session_id:
                self.session_id, self._messages = session_id, []
            self._messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
            self._messages = self._messages[-2 * self._max_turns :] if self._max_turns > 0 else []
            while self._messages and sum(len(m["content"]) for m in self._messages) > self._max_chars:
                self._messages = self._messages[2:]


@dataclass
class _LastTurn:
    """The latest turn: its session, the server that answered, what the caller said and what was kept."""

    session_id: str
    client: ServerClient
    user: str | None
    reply: str | None = None
    """The reply text once known (whole, or as far as the caller heard it)."""
    kept: bool = False
    """The turn is in the conversation."""
    heard: bool = False
    """A barge-in report clipped it: the whole-reply record that may follow must not undo that."""


@dataclass
class _Server:
    client: ServerClient
    monitor: HealthMonitor


def rank(loads: list[tuple[bool | None, float | None]]) -> list[int]:
    """Order servers for a turn: answering ones first, least busy first, the configured order on ties.

    ``loads`` holds (up, share of reply slots in use) per server; a server known to be down is
    still tried, last: the phone's own voice is only for when none answers.
    """
    return sorted(range(len(loads)), key=lambda i: (loads[i][0] is False, loads[i][0] is None, loads[i][1] or 0.0, i))


class ServerFleet:
    """The phone's servers (one or more) behind the one call a turn needs: ``open(request)``."""

    def __init__(self, urls: tuple[str, ...], api_key: str | None, cfg: ClientConfig) -> None:
        if not urls:
            raise ValueError("a fleet needs at least one server")
        self._cfg = cfg
        self._servers = []
        for url in urls:
            client = ServerClient(url, api_key, cfg)
            self._servers.append(_Server(client, HealthMonitor(client.health, cfg)))
        self.health = FleetHealth([s.monitor for s in self._servers])
        """One monitor for the call logic: up while any server is."""
        self.conversation = Conversation(cfg.history_turns)
        self._last: _LastTurn | None = None
        self._lock = threading.Lock()
        """Orders the latest turn's record against a heard report (each runs in its own thread)."""

    @property
    def settings(self) -> ClientConfig:
        """The client settings every server's client shares."""
        return self._cfg

    @property
    def clients(self) -> tuple[ServerClient, ...]:
        """Each server's own client (the ringer asks every server for calls placed to this phone)."""
        return tuple(s.client for s in self._servers)

    @property
    def base_url(self) -> str:
        """The servers, for log lines."""
        return ", ".join(s.client.base_url for s in self._servers)

    def close(self) -> None:
        """Close every server's connections."""
        for server in self._servers:
            server.client.close()

    def open(self, request: ReplyRequest) -> ReplyStream:
        """Send the turn, with the call's history, to the best server that answers.

        Raises ServerRejected at once (the same request fails everywhere), Busy when every server
        that answered was full, ServerUnavailable when none answered.
        """
        session_id = request.session_id or uuid.uuid4().hex  # one id for the call, whichever server answers
        request = dataclasses.replace(
            request, session_id=session_id, history=self.conversation.history(session_id)
        )
        busy: Busy | None = None
        unknown: ServerRejected | None = None
        reasons: list[str] = []
        for index in rank([(s.monitor.up, s.monitor.load) for s in self._servers]):
            server = self._servers[index]
            try:
                stream = server.client.open(request)
            except ServerRejected as err:
                if request.call_id is not None and err.code == "unknown_call":  # placed on another server
                    unknown = err
                    continue
                raise
            except Busy as err:
                server.monitor.load = 1.0  # full: the others go first next time
                busy = err if busy is None or err.retry_after < busy.retry_after else busy
                reasons.append(f"{server.client.base_url} busy")
                continue
            except ServerUnavailable as err:
                server.monitor.report(False, str(err))
                reasons.append(str(err))
                continue
            server.monitor.report(True)
            user = stream.transcript if request.audio_pcm is not None else request.text
            if request.call_id is not None:
                user = ANSWERED_CUE  # what the server sent the LLM as the caller's side of the first turn
            last = _LastTurn(session_id, server.client, user)
            with self._lock:
                self._last = last
            if reasons:
                _LOGGER.info("turn answered by %s after: %s", server.client.base_url, "; ".join(reasons))
            stream.on_complete = functools.partial(self._record, last, stream)
            return stream
        if busy is not None:
            raise busy
        if unknown is not None and not reasons:
            raise unknown  # no server holds the call
        raise ServerUnavailable("no server answered: " + "; ".join(reasons))

    def characters(self) -> dict[str, Any]:
        """GET /characters from the best server that answers (the greeting cache's listing)."""
        return self._first_answer(lambda client: client.characters())

    def greeting(self, character_id: str) -> bytes:
        """A character's greeting as WAV bytes, from the best server that answers."""
        return self._first_answer(lambda client: client.greeting(character_id))

    def filler(self, character_id: str) -> bytes:
        """A character's thinking filler as WAV bytes, from the best server that answers."""
        return self._first_answer(lambda client: client.filler(character_id))

    def _first_answer(self, ask: Callable[[ServerClient], _T]) -> _T:
        """``ask`` the servers best first; the next one when a server is unreachable."""
        reasons: list[str] = []
        for index in rank([(s.monitor.up, s.monitor.load) for s in self._servers]):
            server = self._servers[index]
            try:
                return ask(server.client)
            except ServerUnavailable as err:
                server.monitor.report(False, str(err))
                reasons.append(str(err))
        raise ServerUnavailable("no server answered: " + "; ".join(reasons))

    def _record(self, last: _LastTurn, stream: ReplyStream) -> None:
        """The whole reply was read: keep the turn (its text from the server that spoke it), and whether
        the character ended the call."""
        turn = last.client.last_turn(last.session_id)
        reply, stream.call_ended = turn.reply, turn.call_ended
        with self._lock:
            if last.heard:  # the caller cut in while the read-ahead tail played; the report won
                return
            last.reply = reply
            if last.user and reply:
                self.conversation.add(last.session_id, last.user, reply)
                last.kept = True
            else:
                _LOGGER.warning("turn not kept in the conversation: no reply text from %s", last.client.base_url)

    def report_heard(self, session_id: str, heard_seconds: float, withdrawn: bool = False) -> str | None:
        """The caller cut in ``heard_seconds`` into the latest reply: the server that spoke it and the
        phone's own conversation keep only what was heard. The text kept, None when the server could
        not say (the conversation then keeps the caller's words and a cut mark). Never raises.

        Call it once playback stopped and before the next turn is sent (pi_client/server/heard.py).
        ``withdrawn``: the caller heard none of it and went on talking; the turn leaves both histories.
        """
        with self._lock:
            last = self._last
        if last is None or last.session_id != session_id:
            return self._servers[0].client.report_heard(session_id, heard_seconds, withdrawn)
        text = last.client.report_heard(session_id, heard_seconds, withdrawn)
        with self._lock:
            if withdrawn:
                if last.kept:
                    self.conversation.drop_last(session_id)
                last.heard, last.kept, last.reply = True, False, None
                return text
            last.heard, last.reply = True, text if text is not None else last.reply
            kept = text if text is not None else CUT_MARK
            if last.kept:
                self.conversation.clip_last(session_id, kept)
            elif last.user:
                self.conversation.add(session_id, last.user, kept)
                last.kept = True
        return text

    def reachable(self) -> bool:
        """True when any server answers /health now (a quick check after a reply broke off)."""
        return any(server.client.reachable() for server in self._servers)

    def reply_text(self, session_id: str) -> str | None:
        """The last reply of ``session_id``: as kept when it ended, else asked of the server that answered."""
        with self._lock:
            last = self._last
        if last is None or last.session_id != session_id:
            return self._servers[0].client.reply_text(session_id)
        return last.reply if last.reply is not None else last.client.reply_text(session_id)
