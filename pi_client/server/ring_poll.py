"""The phone's side of the ring API: ask a server for the next call placed to this phone, report what became of it.

Blocking ``requests`` calls (the ringer runs them in daemon threads): the phone has no inbound port, so
it asks, and the server holds the question open up to ``wait`` seconds until a call is due.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote

from common.config import ConfigError, RingConfig
from common.protocol import Field, Route
from pi_client.server.client import ServerClient, ServerUnavailable

PHONE_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""What the server accepts as a phone id."""
TIME_OF_DAY: Final = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
"""``HH:MM`` of a scheduled call."""
_SLACK_SECONDS = 10.0
"""Read timeout beyond the server's wait: a long-poll answers at the end of its wait, not before, in seconds."""


def check_ring_settings(ring: RingConfig) -> None:
    """ConfigError naming the setting when ``pi.ring`` cannot work (checked at start, before any model loads)."""
    if not PHONE_ID.fullmatch(ring.phone_id):
        raise ConfigError(f"pi.ring.phone_id: expected 1-64 of a-z 0-9 - _, got {ring.phone_id!r}")
    if ring.rings < 1:
        raise ConfigError(f"pi.ring.rings: expected at least 1, got {ring.rings}")
    if not ring.cadence or any(not 0 < s <= 60 for s in ring.cadence):
        raise ConfigError(f"pi.ring.cadence: expected seconds on, off, ... each in (0, 60], got {list(ring.cadence)}")
    if not 0 <= ring.poll_wait_seconds <= 300 or ring.retry_seconds <= 0:
        raise ConfigError("pi.ring.poll_wait_seconds: expected 0-300 (and retry_seconds above 0)")
    for i, entry in enumerate(ring.scheduled):
        if not TIME_OF_DAY.fullmatch(entry.at):
            raise ConfigError(f"pi.ring.scheduled[{i}].at: expected HH:MM (local time), got {entry.at!r}")
        if not entry.reason.strip():
            raise ConfigError(f"pi.ring.scheduled[{i}].reason: expected what the call is about")


@dataclass(frozen=True)
class IncomingCall:
    """A call the server handed to this phone: it rings now."""

    call_id: str
    character: str
    reason: str
    line: ServerClient
    """The server that holds the call (answer and reports go there)."""


def next_call(line: ServerClient, phone_id: str, wait: float) -> IncomingCall | None:
    """GET /calls/next: the next call due for ``phone_id`` (now ringing), or None after ``wait`` seconds."""
    found = line.exchange("GET", Route.CALLS + "/next", wait + _SLACK_SECONDS, {Field.PHONE: phone_id, "wait": wait})
    if found is None:
        return None
    try:
        return IncomingCall(str(found["id"]), str(found["character"]), str(found["reason"]), line)
    except (KeyError, TypeError) as err:
        raise ServerUnavailable(f"/calls/next answered no call: {err}") from err


def call_status(call: IncomingCall) -> str:
    """What the server says the call is now (``ringing``, or ``cancelled`` when its placer changed their mind)."""
    found = call.line.exchange("GET", f"{Route.CALLS}/{quote(call.call_id, safe='')}")
    return str(found.get("status", "")) if isinstance(found, dict) else ""


def place_call(line: ServerClient, phone_id: str, character: str | None, reason: str) -> str:
    """POST /calls: ask the server to call ``phone_id`` now; the new call's id."""
    body = {Field.PHONE: phone_id, Field.REASON: reason, **({Field.CHARACTER: character} if character else {})}
    placed = line.exchange("POST", Route.CALLS, body=body)
    return str(placed.get("id", "")) if isinstance(placed, dict) else ""


def report(call: IncomingCall, outcome: Literal["missed", "busy"]) -> None:
    """Tell the server the call rang out (``missed``) or could not ring, the handset being off (``busy``)."""
    call.line.exchange("POST", f"{Route.CALLS}/{quote(call.call_id, safe='')}/{outcome}")
