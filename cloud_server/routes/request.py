"""What every route does with a request: the key check, the one JSON reader, fields, ids, streamed answers.

The key check also admits the console (cloud_server/routes/console.py): a request without a key
but with the console's session cookie passes when the session is live, and, for anything but a
read (GET/HEAD/OPTIONS), when its ``X-CSRF-Token`` header matches the session's. The key, when
sent, is checked as before and the cookie is ignored.

Ids are checked with ``fullmatch``: ``re.match`` with ``$`` lets a trailing newline through, and a
newline in a response header fails after the reply slot was taken (issue 14).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Final

from flask import Response, request

from cloud_server.console_sessions import ConsoleSession
from cloud_server.errors import ApiError
from cloud_server.services import services
from common.protocol import Field

SESSION_ID: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""Session ids are plain tokens: they appear in logs, URLs and the X-Session-Id header."""
CONSOLE_COOKIE: Final = "ai_telephone_console"
"""Holds a console sign-in's random token (never the key)."""
CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def presented_key() -> str | None:
    """The key the caller sent, from ``Authorization: Bearer`` or ``X-API-Key``."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-API-Key")


def check_key(expected: str | None) -> None:
    """Raise 401 unless the request carries ``expected``; ``None`` means auth is off (dev flag)."""
    if expected is None:
        return
    given = presented_key()
    if not given:
        raise ApiError(401, "missing_key", "Send the API key as 'Authorization: Bearer KEY' or 'X-API-Key'.")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(401, "wrong_key", "The API key is not valid.")


def require_key() -> None:
    """401 unless the request carries the configured key, or is the signed-in console's (see the module doc)."""
    expected = services().api_key
    if expected is not None and presented_key() is None and CONSOLE_COOKIE in request.cookies:
        session = console_session()
        if session is None:
            raise ApiError(401, "signed_out", "The console session has ended; sign in again.")
        if request.method not in SAFE_METHODS:
            check_csrf(session, request.headers.get(CSRF_HEADER))
        return
    check_key(expected)


def client_address() -> str:
    """Who is asking: the peer, or the X-Forwarded-For that scripts/serve's HAProxy sets, when the peer is this machine.

    HAProxy replaces the header with the connection's source, so through it the value is one address;
    a header from anyone else is ignored (it could say anything).
    """
    peer = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
    try:
        trusted = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        trusted = False
    return forwarded if forwarded and trusted else peer


def console_session() -> ConsoleSession | None:
    """The live console session named by the request's cookie, if any."""
    token = request.cookies.get(CONSOLE_COOKIE)
    return services().console.find(token) if token else None


def check_csrf(session: ConsoleSession, given: str | None) -> None:
    """403 unless ``given`` is the session's CSRF token."""
    if not given or not hmac.compare_digest(given.encode("utf-8"), session.csrf.encode("utf-8")):
        raise ApiError(403, "csrf_failed", "This change lacks the console's CSRF token; reload the page.")


def has_key() -> bool:
    """Whether the request carries the configured key (for answers that show more to the key holder)."""
    try:
        require_key()
    except ApiError:
        return False
    return True


def json_body(max_bytes: int) -> dict[str, Any]:
    """The request's JSON object, bounded in size; 413/400 with a clear message otherwise (every route uses this)."""
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


def text_field(body: Mapping[str, Any], name: str, max_chars: int, required: bool) -> str | None:
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


def character_field(body: Mapping[str, Any]) -> str | None:
    """The requested character id (None: the default one); 400 when not a string."""
    value = body.get(Field.CHARACTER)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, "bad_field", "'character' must be a string.")
    return value or None


HISTORY_ROLES: Final = ("user", "assistant")


def history_field(
    body: Mapping[str, Any], name: str, max_messages: int, max_chars: int
) -> tuple[dict[str, str], ...] | None:
    """The conversation the client keeps (None: it sent none, the server's session is used).

    A list of ``{role: user|assistant, content: str}``, oldest first; in form fields (/process-audio)
    the same list as a JSON string. 400 when malformed, 413 past ``max_messages`` or ``max_chars``.
    """
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, str):  # multipart form fields are strings
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ApiError(400, "bad_history", f"'{name}' must be a JSON list of messages.") from None
    if not isinstance(value, list):
        raise ApiError(400, "bad_history", f"'{name}' must be a list of {{\"role\", \"content\"}} messages.")
    if len(value) > max_messages:
        raise ApiError(413, "history_too_long", f"'{name}' has {len(value)} messages; the limit is {max_messages}.")
    messages: list[dict[str, str]] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            raise ApiError(400, "bad_history", f"'{name}[{i}]' must be an object with exactly 'role' and 'content'.")
        role, content = item["role"], item["content"]
        if role not in HISTORY_ROLES:
            raise ApiError(400, "bad_history", f"'{name}[{i}].role' must be 'user' or 'assistant'.")
        if not isinstance(content, str):
            raise ApiError(400, "bad_history", f"'{name}[{i}].content' must be a string.")
        messages.append({"role": role, "content": content})
    total = sum(len(m["content"]) for m in messages)
    if total > max_chars:
        raise ApiError(413, "history_too_long", f"'{name}' holds {total} characters; the limit is {max_chars}.")
    return tuple(messages)


def is_session_id(value: object) -> bool:
    """Whether ``value`` is a well-formed session id (the whole string, no trailing newline)."""
    return isinstance(value, str) and SESSION_ID.fullmatch(value) is not None


def session_id_field(body: Mapping[str, Any]) -> str:
    """The caller's session id, or a new one."""
    value = body.get(Field.SESSION_ID)
    if value is None or value == "":
        return uuid.uuid4().hex
    if not is_session_id(value):
        raise ApiError(400, "bad_session_id", "'session_id' must be 1-64 letters, digits or . _ : -")
    return str(value)


def streamed(body: Iterator[bytes], mimetype: str, headers: Mapping[str, str], cancel: threading.Event) -> Response:
    """A streamed answer holding a reply slot until it ends; ``Busy`` (503 at the edge) when none is free.

    The response, headers included, is built before the slot is taken, so nothing that can fail
    stands between taking the slot and handing its release to the WSGI server, which calls it when
    the reply ends, the caller hangs up or a write times out.
    """
    def released_at_the_end() -> Iterator[bytes]:
        # Also released when the body runs out, not only when the WSGI server calls close(): werkzeug's
        # development server behind HAProxy never did (it blocked draining the socket), and kept the slot.
        try:
            yield from body
        finally:
            on_close()

    response = Response(released_at_the_end(), mimetype=mimetype, headers=dict(headers))
    slot = services().slots.take()

    def on_close() -> None:  # safe twice: the slot's release is idempotent, the event stays set
        cancel.set()
        slot.release()

    try:
        response.call_on_close(on_close)
    except BaseException:
        on_close()
        raise
    return response


def page_headers(response: Response, csp: str) -> Response:
    """The headers every HTML page carries: its Content-Security-Policy, no framing, no sniffing, no referrer."""
    response.headers.setdefault("Content-Security-Policy", csp)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
