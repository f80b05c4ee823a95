"""Calls a character places to a phone: queued, handed to the phone's long-poll, answered or missed.

A phone has no inbound port, so it asks (``GET /calls/next``, waiting up to ``max_wait_seconds``) and
the server hands it the oldest call that is due. The book is kept in ``<data_dir>/calls.json``, rewritten
atomically on every change, so a restart loses no queued call. Times are wall-clock (they must survive
a restart); the clock is injected for tests.

A call's life: ``queued`` → ``ringing`` (handed to the phone) → ``answered`` | ``missed``; ``busy`` (the
handset was off the hook) puts it back in the queue; ``cancelled`` from queued or ringing; ``expired``
when no phone took it within its ``ttl_seconds``; ``missed`` too when the phone never reports back.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from common.atomic import atomic_write
from common.config import CallsConfig

_LOGGER = logging.getLogger(__name__)
FILE_NAME: Final = "calls.json"
PHONE_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""Phone ids are plain names (they appear in URLs and logs)."""
CALL_ID: Final = re.compile(r"[0-9a-f]{32}")
ACTIVE: Final = ("queued", "ringing")
STATUSES: Final = ("queued", "ringing", "answered", "missed", "cancelled", "expired")
MAX_ACTIVE_CALLS: Final = 1000
"""Queued and ringing calls, all phones together: phone ids are free names, so the per-phone limit alone
would not bound the file."""


class CallError(Exception):
    """A call request that cannot be done; ``status`` and ``code`` are what the HTTP edge answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Call:
    """One call placed to a phone."""

    call_id: str
    phone: str
    character: str
    reason: str
    status: str
    created: float
    """When it was placed (seconds since the epoch)."""
    due: float
    """When it may ring (``at``, else when placed)."""
    expires: float
    """A call still queued at this time is ``expired``."""
    updated: float
    delivered: float | None = None
    """When the phone last took it (it rings from then on)."""
    attempts: int = 0
    """Times it was handed to the phone (a busy line puts it back)."""

    def as_json(self) -> dict[str, Any]:
        """The API's view of the call."""
        return {
            "id": self.call_id,
            "phone": self.phone,
            "character": self.character,
            "reason": self.reason,
            "status": self.status,
            "created": _iso(self.created),
            "at": _iso(self.due),
            "expires": _iso(self.expires),
            "updated": _iso(self.updated),
            "attempts": self.attempts,
        }


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


class CallBook:
    """The calls, thread-safe; ``next_for`` blocks (bounded) until a call for the phone is due."""

    def __init__(self, path: Path, cfg: CallsConfig, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._cfg = cfg
        self._clock = clock
        self._changed = threading.Condition()
        self._waiting = 0
        self._calls: dict[str, Call] = self._load()

    @classmethod
    def in_data_dir(cls, data_dir: Path, cfg: CallsConfig) -> CallBook:
        """The book kept in ``data_dir``."""
        return cls(data_dir / FILE_NAME, cfg)

    def _load(self) -> dict[str, Call]:
        if not self._path.is_file():
            return {}
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            calls = [Call(**item) for item in raw["calls"]]
        except (OSError, ValueError, KeyError, TypeError) as err:  # written atomically: only a hand edit gets here
            _LOGGER.error("%s is unreadable (%s); starting with no calls", self._path, err)
            return {}
        _LOGGER.info("%d calls kept in %s", len(calls), self._path)
        return {c.call_id: c for c in calls}

    def _save(self) -> None:
        data = {"calls": [asdict(c) for c in self._calls.values()]}
        atomic_write(self._path, json.dumps(data, ensure_ascii=False, indent=1))

    def place(self, phone: str, character: str, reason: str, at: float | None, ttl: float | None) -> Call:
        """Queue a call; CallError 429 when the phone already has ``max_queued_per_phone`` waiting."""
        now = self._clock()
        due = max(now, at) if at is not None else now
        expires = due + (self._cfg.ttl_seconds if ttl is None else ttl)
        call = Call(uuid.uuid4().hex, phone, character, reason, "queued", now, due, expires, now)
        with self._changed:
            self._sweep(now)
            active = [c for c in self._calls.values() if c.status in ACTIVE]
            if len(active) >= MAX_ACTIVE_CALLS:
                raise CallError(429, "too_many_calls", f"{len(active)} calls are waiting already; try again later.")
            waiting = sum(1 for c in active if c.phone == phone)
            if waiting >= self._cfg.max_queued_per_phone:
                raise CallError(
                    429, "too_many_calls", f"Phone {phone!r} already has {waiting} calls waiting; the limit is "
                    f"{self._cfg.max_queued_per_phone}.",
                )
            self._calls[call.call_id] = call
            self._save()
            self._changed.notify_all()
        _LOGGER.info("call %s queued: %s → phone %s", call.call_id, character, phone)
        return call

    def next_for(self, phone: str, wait: float) -> Call | None:
        """The oldest due call for ``phone``, now ``ringing``; waits up to ``wait`` seconds for one (None: none)."""
        deadline = time.monotonic() + wait
        with self._waiter():
            while True:
                now = self._clock()
                self._sweep(now)
                due = [c for c in self._calls.values() if c.phone == phone and c.status == "queued"]
                ready = min((c for c in due if c.due <= now), key=lambda c: (c.due, c.created), default=None)
                if ready is not None:
                    call = self._set(ready, "ringing", now, delivered=now, attempts=ready.attempts + 1)
                    _LOGGER.info("call %s handed to phone %s", call.call_id, phone)
                    return call
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                soonest = min((c.due - now for c in due), default=left)  # a call placed for later wakes us then
                self._changed.wait(max(0.01, min(left, soonest)))

    @contextmanager
    def _waiter(self) -> Iterator[None]:
        """Hold the lock as one of at most ``max_waiting`` waiting phones (each holds a server thread)."""
        with self._changed:
            if self._waiting >= self._cfg.max_waiting:
                raise CallError(503, "busy", f"{self._waiting} phones are waiting already; ask again shortly.")
            self._waiting += 1
            try:
                yield
            finally:
                self._waiting -= 1

    def get(self, call_id: str) -> Call:
        """The call; CallError 404 when unknown."""
        with self._changed:
            self._sweep(self._clock())
            return self._find(call_id)

    def calls_of(self, phone: str | None = None) -> list[Call]:
        """Calls, newest first, of one phone or all."""
        with self._changed:
            self._sweep(self._clock())
            calls = [c for c in self._calls.values() if phone is None or c.phone == phone]
        return sorted(calls, key=lambda c: c.created, reverse=True)

    def cancel(self, call_id: str) -> Call:
        """A queued or ringing call will not ring (any more); CallError 409 once it was answered or is over."""
        return self._move(call_id, ("queued", "ringing"), "cancelled")

    def answer(self, call_id: str) -> Call:
        """The handset was lifted while it rang."""
        return self._move(call_id, ("ringing",), "answered")

    def missed(self, call_id: str) -> Call:
        """It rang out unanswered."""
        return self._move(call_id, ("ringing",), "missed")

    def busy(self, call_id: str) -> Call:
        """The phone was in use: back in the queue, to ring once the handset is down."""
        return self._move(call_id, ("ringing",), "queued")

    def _move(self, call_id: str, allowed: tuple[str, ...], status: str) -> Call:
        with self._changed:
            now = self._clock()
            self._sweep(now)
            call = self._find(call_id)
            if call.status not in allowed:
                raise CallError(409, f"call_{call.status}", f"The call is {call.status}; it cannot become {status}.")
            call = self._set(call, status, now)
        _LOGGER.info("call %s %s", call_id, status)
        return call

    def _find(self, call_id: str) -> Call:
        call = self._calls.get(call_id)
        if call is None:
            raise CallError(404, "unknown_call", "No such call (finished calls are kept a while, not for ever).")
        return call

    def _set(self, call: Call, status: str, now: float, **changes: Any) -> Call:
        """Change and persist one call (the lock is held); waiting phones re-check."""
        call = replace(call, status=status, updated=now, **changes)
        self._calls[call.call_id] = call
        self._save()
        self._changed.notify_all()
        return call

    def _sweep(self, now: float) -> None:
        """Expire stale queued calls, miss ringing ones nobody reported, drop the oldest finished ones."""
        changed = False
        for call in list(self._calls.values()):
            if call.status == "queued" and call.expires <= now:
                self._calls[call.call_id] = replace(call, status="expired", updated=now)
                changed = True
            elif call.status == "ringing" and (call.delivered or 0) + self._cfg.ring_timeout_seconds <= now:
                self._calls[call.call_id] = replace(call, status="missed", updated=now)
                changed = True
        finished = sorted((c for c in self._calls.values() if c.status not in ACTIVE), key=lambda c: c.updated)
        for call in finished[: max(0, len(finished) - self._cfg.keep_finished)]:
            del self._calls[call.call_id]
            changed = True
        if changed:
            self._save()
