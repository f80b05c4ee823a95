"""The core routes: /process-text (a streamed spoken reply), /sessions/<id>, /health."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from cloud_server.errors import ApiError
from cloud_server.pipeline.reply import Turn
from cloud_server.routes.auth import check_key
from cloud_server.services import Services
from common.protocol import Field, Header, Route

bp = Blueprint("api", __name__)
SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def services() -> Services:
    """The process's shared Services (built once by create_app)."""
    return current_app.extensions["ai_telephone"]  # type: ignore[no-any-return]


def require_key() -> None:
    """401 unless the request carries the configured key."""
    check_key(services().api_key)


def json_body(max_bytes: int) -> dict[str, Any]:
    """The request's JSON object, bounded in size; 413/400 with a clear message otherwise."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "body_too_large", f"The request body is over {max_bytes} bytes.")
    raw = request.get_data(cache=True)
    if len(raw) > max_bytes:
        raise ApiError(413, "body_too_large", f"The request body is over {max_bytes} bytes.")
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "The body must be a JSON object, e.g. {\"text\": \"Hello\"}.")
    return body


def text_field(body: dict[str, Any], name: str, max_chars: int, required: bool) -> str | None:
    """A string field, stripped; 400 when of the wrong type or required and empty, 413 when too long."""
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, "missing_field", f"'{name}' is required.")
        return None
    if not isinstance(value, str):
        raise ApiError(400, "bad_field", f"'{name}' must be a string.")
    value = value.strip()
    if required and not value:
        raise ApiError(400, "empty_field", f"'{name}' must not be empty.")
    if len(value) > max_chars:
        raise ApiError(413, "text_too_long", f"'{name}' is {len(value)} characters; the limit is {max_chars}.")
    return value or None


def session_id_field(body: dict[str, Any]) -> str:
    """The caller's session id, or a new one; ids are plain tokens (they appear in logs and URLs)."""
    value = body.get(Field.SESSION_ID)
    if value is None or value == "":
        return uuid.uuid4().hex
    if not isinstance(value, str) or not SESSION_ID.match(value):
        raise ApiError(400, "bad_session_id", "'session_id' must be 1-64 letters, digits or . _ : -")
    return value


def stream_turn(turn: Turn, extra_headers: dict[str, str] | None = None) -> Response:
    """Admit the turn (503 when the queue is full), then stream its spoken reply as WAV.

    Everything that can fail is checked before this point: once the first byte is out, the
    status cannot change, and failures degrade to the fallback voice or an apology instead.
    """
    svc = services()
    release = svc.slots.admit(svc.config.server.limits.retry_after_seconds)
    cancel = threading.Event()
    headers = {
        Header.SESSION_ID: turn.session_id,
        Header.CHARACTER: turn.character_id,
        Header.SAMPLE_RATE: str(svc.pipeline.sample_rate),
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
        **(extra_headers or {}),
    }
    return streaming_response(svc.pipeline.speak(turn, cancel), "audio/wav", headers, cancel, release)


def streaming_response(
    body: Iterator[bytes], mimetype: str, headers: dict[str, str], cancel: threading.Event, release: Callable[[], None]
) -> Response:
    """A streamed response whose end, or the caller hanging up, cancels the work and frees its slot."""

    def on_close() -> None:
        # Called by the WSGI server when the reply ends or the caller hangs up.
        cancel.set()
        release()

    response = Response(body, mimetype=mimetype, headers=headers)
    response.call_on_close(on_close)
    return response


@bp.post(Route.PROCESS_TEXT)
def process_text() -> Response:
    """What the caller said, as text → the spoken reply, streamed."""
    require_key()
    svc = services()
    limits = svc.config.server.limits
    body = json_body(limits.max_body_bytes)
    text = text_field(body, Field.TEXT, limits.max_text_chars, required=True)
    prompt = text_field(body, Field.PROMPT, limits.max_prompt_chars, required=False)
    character_value = body.get(Field.CHARACTER)
    if character_value is not None and not isinstance(character_value, str):
        raise ApiError(400, "bad_field", "'character' must be a string.")
    character_id, character = svc.character(character_value or None)
    turn = Turn(
        text=str(text),
        session_id=session_id_field(body),
        character_id=character_id,
        character=character,
        voice=svc.voice_for(character_id, character),
        prompt=prompt,
    )
    return stream_turn(turn)


@bp.get(Route.SESSIONS + "/<session_id>")
def get_session(session_id: str) -> Response:
    """The conversation so far: the Pi logs the reply text from here after the audio ended."""
    require_key()
    session = services().sessions.get(session_id) if SESSION_ID.match(session_id) else None
    if session is None:
        raise ApiError(404, "unknown_session", "No such session (it may have expired).")
    return jsonify(
        session_id=session.session_id,
        character=session.character,
        history=session.history,
        last_reply=session.last_reply,
        last_transcript=session.last_transcript,
    )


@bp.get(Route.HEALTH)
def health() -> Response:
    """Liveness and what is degraded; no key needed, no secrets."""
    svc = services()
    cfg = svc.config.server
    llm_ok = svc.llm_reachable()
    tts_degraded = svc.primary.name != cfg.tts.engine or bool(getattr(svc.primary, "degraded", False))
    status = "ok" if llm_ok and not tts_degraded else "degraded"
    llm_info: dict[str, Any] = {"backend": cfg.llm.backend, "model": svc.llm.model, "reachable": llm_ok}
    return jsonify(
        status=status,
        llm=llm_info,
        tts={
            "configured": cfg.tts.engine,
            "engine": svc.primary.name,
            "fallback": svc.fallback.name,
            "degraded": tts_degraded,
            "device": getattr(svc.primary, "device", "cpu"),
            "model_resident": bool(getattr(svc.primary, "model_resident", True)),
            "sample_rate": svc.pipeline.sample_rate,
        },
        queue={"active": svc.slots.active, "capacity": svc.slots.capacity},
        sessions=len(svc.sessions),
        uptime_seconds=round(time.monotonic() - svc.started, 1),
    )
