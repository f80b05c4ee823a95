"""The ring API: a character calls a phone. ``POST /calls`` queues, the phone long-polls ``GET /calls/next``,
``POST /calls/<id>/answer`` streams the character's first words (the reason in its prompt), and the phone
reports a call it rang out (``missed``) or could not ring (``busy``). See cloud_server/calls.py.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request

from cloud_server.calls import CALL_ID, PHONE_ID, Call, CallError
from cloud_server.errors import ApiError
from cloud_server.pipeline.reply import Turn
from cloud_server.routes.core import stream_turn
from cloud_server.routes.knobs import turn_voice
from cloud_server.routes.request import character_field, json_body, require_key, session_id_field, text_field
from cloud_server.services import services
from common.protocol import ANSWERED_CUE, Field, Route

bp = Blueprint("calls", __name__)
T = TypeVar("T")


def call_prompt(call: Call, extra: str | None) -> str:
    """The system text below the persona for a call's first turn: the character placed the call, and why."""
    prompt = (
        "You are the one calling: you phoned this person and they have just picked up.\n"
        f"Why you are calling: {call.reason}\n"
        "Speak first: greet them and say why you called, in a sentence or two, then let them answer."
    )
    return f"{prompt}\n\n{extra}" if extra else prompt


def _guarded(work: Callable[[], T]) -> T:
    """Run a call book operation; its CallError becomes the JSON error (503 with Retry-After)."""
    try:
        return work()
    except CallError as err:
        retry = str(services().config.server.limits.retry_after_seconds)
        headers = {"Retry-After": retry} if err.status == 503 else None
        raise ApiError(err.status, err.code, err.message, headers) from err


def _call_id(call_id: str) -> str:
    if not CALL_ID.fullmatch(call_id):
        raise ApiError(404, "unknown_call", "No such call.")
    return call_id


def _phone(value: Any) -> str:
    if not isinstance(value, str) or not PHONE_ID.fullmatch(value):
        raise ApiError(400, "bad_phone", "'phone' must be 1-64 of a-z 0-9 - _ (the phone's pi.ring.phone_id).")
    return value


def _seconds(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, "bad_field", f"'{name}' must be a number of seconds.")
    if not low <= value <= high:
        raise ApiError(400, "out_of_range", f"'{name}' must be between {low:g} and {high:g}.")
    return float(value)


def _at(body: dict[str, Any], horizon: float) -> float | None:
    """``at``: when the call may ring, ISO 8601 with a UTC offset ("2026-12-01T08:00:00+01:00", or Z)."""
    value = body.get("at")
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ApiError(400, "bad_time", "'at' must be ISO 8601 with a UTC offset, e.g. 2026-12-01T08:00:00+01:00.")
    seconds = when.timestamp()
    if seconds > time.time() + horizon:
        raise ApiError(400, "out_of_range", f"'at' is more than {horizon:g} s ahead.")
    return seconds


@bp.post(Route.CALLS)
def place_call() -> tuple[Response, int]:
    """Queue a call from a character to a phone."""
    require_key()
    svc = services()
    cfg = svc.config.server.calls
    body = json_body(svc.config.server.limits.max_body_bytes)
    phone = _phone(body.get(Field.PHONE))
    character_id, _ = svc.characters.get(character_field(body))  # 404 unknown_character
    reason = str(text_field(body, Field.REASON, cfg.max_reason_chars, required=True))
    at = _at(body, cfg.max_ttl_seconds)
    ttl = _seconds(body, "ttl_seconds", 1.0, cfg.max_ttl_seconds)
    call = _guarded(lambda: svc.calls.place(phone, character_id, reason, at, ttl))
    return jsonify(call.as_json()), 201


@bp.get(Route.CALLS)
def list_calls() -> Response:
    """The calls, newest first (``?phone=`` for one phone's)."""
    require_key()
    phone = request.args.get(Field.PHONE)
    calls = services().calls.calls_of(_phone(phone) if phone is not None else None)
    return jsonify(calls=[c.as_json() for c in calls])


@bp.get(Route.CALLS + "/next")
def next_call() -> Response | tuple[str, int]:
    """The phone asks for its next call: it is handed over (now ringing) or, after ``wait`` seconds, 204."""
    require_key()
    svc = services()
    phone = _phone(request.args.get(Field.PHONE))
    wait = _wait(svc.config.server.calls.max_wait_seconds)
    call = _guarded(lambda: svc.calls.next_for(phone, wait))
    if call is None:
        return "", 204
    return jsonify(call.as_json())


def _wait(limit: float) -> float:
    """``?wait=``: seconds to wait for a call, at most ``limit`` (the default)."""
    raw = request.args.get("wait")
    if raw is None:
        return limit
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "bad_field", "'wait' must be a number of seconds.") from None
    if not (math.isfinite(value) and 0 <= value <= limit):
        raise ApiError(400, "out_of_range", f"'wait' must be between 0 and {limit:g}.")
    return value


@bp.get(Route.CALLS + "/<call_id>")
def get_call(call_id: str) -> Response:
    """One call and what became of it."""
    require_key()
    return jsonify(_guarded(lambda: services().calls.get(_call_id(call_id))).as_json())


@bp.delete(Route.CALLS + "/<call_id>")
def cancel_call(call_id: str) -> Response:
    """Cancel a call that has not been answered (a ringing phone stops at its next ring)."""
    require_key()
    return jsonify(_guarded(lambda: services().calls.cancel(_call_id(call_id))).as_json())


@bp.post(Route.CALLS + "/<call_id>/missed")
def call_missed(call_id: str) -> Response:
    """The phone rang it out: nobody lifted the handset."""
    require_key()
    return jsonify(_guarded(lambda: services().calls.missed(_call_id(call_id))).as_json())


@bp.post(Route.CALLS + "/<call_id>/busy")
def call_busy(call_id: str) -> Response:
    """The phone could not ring (the handset was off the hook): the call waits for the next poll."""
    require_key()
    return jsonify(_guarded(lambda: services().calls.busy(_call_id(call_id))).as_json())


@bp.post(Route.CALLS + "/<call_id>/answer")
def answer_call(call_id: str) -> Response:
    """The handset was lifted while the call rang: the character's first words, streamed as /process-text's reply.

    Optional JSON ``{session_id?, prompt?}`` plus the knobs of /process-text; the call's reason goes into the
    character's prompt. 409 when the call is not ringing (cancelled, already answered, rang out).
    """
    require_key()
    svc = services()
    limits = svc.config.server.limits
    body = json_body(limits.max_body_bytes) if request.get_data(cache=True) else {}
    call = _guarded(lambda: svc.calls.get(_call_id(call_id)))
    if call.status != "ringing":
        raise ApiError(409, f"call_{call.status}", f"The call is {call.status}, not ringing.")
    character_id, character = svc.characters.get(call.character)
    extra = text_field(body, Field.PROMPT, limits.max_prompt_chars, required=False)
    turn = Turn(
        text=ANSWERED_CUE,
        session_id=session_id_field(body),
        character_id=character_id,
        character=character,
        voice=turn_voice(body, character_id),
        prompt=call_prompt(call, extra),
    )
    response = stream_turn(turn)  # takes a reply slot (503 when none is free: the call still rings)
    try:
        _guarded(lambda: svc.calls.answer(call.call_id))
    except ApiError:
        response.close()  # gives the slot back
        raise
    return response
