"""The core routes: /process-text (a streamed spoken reply), /sessions/<id> and its heard report, /health."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from flask import Blueprint, Response, jsonify

from cloud_server.errors import ApiError
from cloud_server.pipeline.reply import Turn
from cloud_server.routes.knobs import turn_voice
from cloud_server.routes.request import (
    character_field,
    has_key,
    history_field,
    is_session_id,
    json_body,
    require_key,
    session_id_field,
    streamed,
    text_field,
)
from cloud_server.services import Services, services
from cloud_server.tts.gpu_memory import gpu_memory
from common.protocol import Field, Header, Route

bp = Blueprint("api", __name__)


def stream_turn(turn: Turn, extra_headers: dict[str, str] | None = None) -> Response:
    """Stream the turn's spoken reply as WAV, holding a reply slot (503 when none is free).

    Everything that can fail is checked before this point: once the first byte is out, the
    status cannot change, and failures degrade to the fallback voice or an apology instead.
    """
    svc = services()
    cancel = threading.Event()
    headers = {
        Header.SESSION_ID: turn.session_id,
        Header.CHARACTER: turn.character_id,
        Header.SAMPLE_RATE: str(svc.pipeline.sample_rate),
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
        **(extra_headers or {}),
    }
    return streamed(svc.pipeline.speak(turn, cancel), "audio/wav", headers, cancel)


@bp.post(Route.PROCESS_TEXT)
def process_text() -> Response:
    """What the caller said, as text → the spoken reply, streamed."""
    require_key()
    svc = services()
    limits = svc.config.server.limits
    body = json_body(limits.max_body_bytes)
    text = text_field(body, Field.TEXT, limits.max_text_chars, required=True)
    prompt = text_field(body, Field.PROMPT, limits.max_prompt_chars, required=False)
    character_id, character = svc.characters.get(character_field(body))
    turn = Turn(
        text=str(text),
        session_id=session_id_field(body),
        character_id=character_id,
        character=character,
        voice=turn_voice(body, character_id),
        prompt=prompt,
        history=history_field(body, Field.HISTORY, limits.max_history_messages, limits.max_history_chars),
    )
    return stream_turn(turn)


@bp.get(Route.SESSIONS + "/<session_id>")
def get_session(session_id: str) -> Response:
    """The conversation so far; the Pi reads it when a reply ends (its text, and whether it ended the call)."""
    require_key()
    session = services().sessions.get(session_id) if is_session_id(session_id) else None
    if session is None:
        raise ApiError(404, "unknown_session", "No such session (it may have expired).")
    return jsonify(
        session_id=session.session_id,
        character=session.character,
        history=session.history,
        last_reply=session.last_reply,
        last_transcript=session.last_transcript,
        call_ended=session.ended,
    )


@bp.post(Route.SESSIONS + "/<session_id>" + Route.HEARD)
def report_heard(session_id: str) -> Response:
    """After a barge-in: the caller heard ``heard_seconds`` of the latest reply, the history keeps only that
    (``withdrawn``: none of it, and the caller went on talking: the history drops the turn).

    Sent by the phone as soon as it stopped playing (the reply's request is closed by then or soon
    after); the answer's ``heard_text`` is what the history now holds, which a phone that keeps its
    own conversation (stateless turns) keeps too.
    """
    require_key()
    svc = services()
    body = json_body(svc.config.server.limits.max_body_bytes)
    heard = body.get(Field.HEARD_SECONDS)
    longest = svc.config.server.limits.max_reply_seconds
    if isinstance(heard, bool) or not isinstance(heard, int | float) or not math.isfinite(heard):
        raise ApiError(400, "bad_field", f"'{Field.HEARD_SECONDS}' must be a number of seconds.")
    if not 0 <= heard <= longest:
        raise ApiError(400, "out_of_range", f"'{Field.HEARD_SECONDS}' must be between 0 and {longest:g}.")
    withdrawn = body.get(Field.WITHDRAWN, False)
    if not isinstance(withdrawn, bool):
        raise ApiError(400, "bad_field", f"'{Field.WITHDRAWN}' must be true or false.")
    clipped = svc.sessions.clip_reply(session_id, float(heard), withdrawn) if is_session_id(session_id) else None
    if clipped is None:
        raise ApiError(404, "unknown_reply", "This session has no reply on this server (it may have expired).")
    text, cut = clipped
    return jsonify(session_id=session_id, heard_seconds=float(heard), heard_text=text, cut=cut, withdrawn=withdrawn)


@bp.get(Route.HEALTH)
def health() -> Response:
    """``status`` (ok/degraded) for anyone, e.g. a load balancer; the details only with the key."""
    svc = services()
    details = health_details(svc)
    status = "ok" if details["healthy"] else "degraded"
    if not has_key():
        return jsonify(status=status)
    del details["healthy"]
    return jsonify(status=status, **details)


def health_details(svc: Services) -> dict[str, Any]:
    """What /health tells the key holder; ``healthy`` says whether all of it is as configured."""
    cfg = svc.config.server
    llm_ok = svc.llm_reachable()
    voice = svc.primary.status()  # the one place /health learns about the voice: every wrapper delegates it
    tts_degraded = voice.degraded or voice.name != cfg.tts.engine
    stale = svc.slots.held_longer_than(svc.longest_reply_seconds)
    gpu = gpu_memory(voice.device)
    return {
        "healthy": llm_ok and not tts_degraded and not stale,
        "llm": {"backend": cfg.llm.backend, "model": svc.llm.model, "reachable": llm_ok},
        "tts": {
            "configured": cfg.tts.engine,
            "engine": voice.name,
            "fallback": svc.fallback.name,
            "degraded": tts_degraded,
            "degraded_reason": voice.reason,
            "device": voice.device,
            "model_resident": voice.resident,
            "sample_rate": svc.pipeline.sample_rate,
        },
        "queue": {"active": svc.slots.active, "capacity": svc.slots.capacity, "stale": stale},
        **({"gpu": gpu} if gpu is not None else {}),  # absent on CPU
        "storage": svc.storage.status(),  # reported, not part of "healthy": calls work without it
        "sessions": len(svc.sessions),
        "uptime_seconds": round(time.monotonic() - svc.started, 1),
    }
