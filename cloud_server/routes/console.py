"""The console: server-rendered pages at ``/`` to watch and run the server from a browser.

Sign-in takes the API key once, through a password field, and answers with a cookie holding a
random session token (HttpOnly, SameSite=Strict, Secure under TLS, expiring); the key itself is
never stored in the browser. Every change carries the session's CSRF token (a form field here,
the ``X-CSRF-Token`` header on the page's own API calls, checked in routes/request.py). The page
scripts are static files and a Content-Security-Policy forbids any other, so a reply text or a
persona cannot run as script.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any, Final

from flask import Blueprint, Response, redirect, render_template, request

from cloud_server.errors import error_response
from cloud_server.pipeline.recent import RecentTurn
from cloud_server.routes.core import health_details
from cloud_server.routes.request import (
    CONSOLE_COOKIE,
    check_csrf,
    client_address,
    console_session,
    page_headers,
)
from cloud_server.routes.voices import ignored_knobs
from cloud_server.services import services

bp = Blueprint("console", __name__)
LOGIN_COOKIE: Final = "ai_telephone_login"
"""A one-time nonce the sign-in form must echo (CSRF on the sign-in itself)."""
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_CHART_W: Final = 560
_CHART_H: Final = 140
_CHART_MIN_SLOTS: Final = 12


@bp.after_request
def _page_headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return page_headers(response, _CSP)


@bp.get("/")
def status_page() -> Response | str:
    """The status tab when signed in, else the sign-in form."""
    session = console_session()
    if session is None:
        return _sign_in_page()
    return render_template("status.html", tab="status", csrf=session.csrf, **status_context())


@bp.get("/console/status-panel")
def status_panel() -> Response | str:
    """The status tab's live part (health, latest calls, chart), polled by the page (htmx).

    Signed out (the session expired, or ended in another tab), the page is sent to the sign-in form.
    """
    if console_session() is None:
        return error_response(401, "signed_out", "Sign in to the console first.", {"HX-Redirect": "/"})
    return render_template("_status.html", **status_context())


@bp.get("/console/characters")
def characters_page() -> Response | str:
    """The characters tab: edit, create, delete."""
    session = console_session()
    if session is None:
        return redirect("/", 303)  # type: ignore[return-value]
    svc = services()
    return render_template(
        "characters.html",
        tab="characters",
        csrf=session.csrf,
        characters=svc.characters.listing(ignored_knobs()),
        voices=[v.voice_id for v in svc.library.list()],
        emotions=_emotions_by_character(),
    )


@bp.get("/console/voices")
def voices_page() -> Response | str:
    """The voices tab: upload (drop, pick or record), hear, delete."""
    session = console_session()
    if session is None:
        return redirect("/", 303)  # type: ignore[return-value]
    svc = services()
    users = {v.voice_id: [*svc.characters.overrides.users_of(v.voice_id), *svc.emotions.users_of(v.voice_id)]
             for v in svc.library.list()}
    return render_template(
        "voices.html",
        tab="voices",
        csrf=session.csrf,
        voices=[v.as_json() | {"used_by": users.get(v.voice_id, [])} for v in svc.library.list()],
        min_seconds=svc.library.min_seconds,
        max_seconds=svc.config.server.voices.max_seconds,
    )


@bp.get("/console/try")
def try_page() -> Response | str:
    """The try-it tab: type or say a line, hear the reply (with this line's own voice settings, if given)."""
    session = console_session()
    if session is None:
        return redirect("/", 303)  # type: ignore[return-value]
    svc = services()
    return render_template(
        "try.html",
        tab="try",
        csrf=session.csrf,
        characters=svc.characters.listing(ignored_knobs()),
        emotions=[e.as_json() for e in svc.emotions.profiles()],
        max_chars=svc.config.server.limits.max_text_chars,
        max_tokens=svc.config.server.tts.chatterbox.max_tokens,
        engine=svc.primary.name,
        ignored=_ignored_try_knobs(svc.primary.name),
    )


@bp.post("/console/sign-in")
def sign_in() -> Response | tuple[str, int]:
    """Check the key once; answer with the session cookie (never the key) and go to the status tab."""
    svc = services()
    address = client_address()
    wait = svc.sign_ins.retry_after(address)
    if wait is not None:  # too many wrong keys from here: even the right one waits
        page = _sign_in_page(f"Too many wrong keys from this address; try again in {wait} s.", 429)
        page.headers["Retry-After"] = str(wait)
        return page  # type: ignore[return-value]
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    given_nonce = request.form.get("login_nonce", "")
    if not nonce or not hmac.compare_digest(nonce.encode(), given_nonce.encode()):
        return _sign_in_page("The sign-in form expired; please try again.", 403)  # type: ignore[return-value]
    key = request.form.get("key", "")
    expected = svc.api_key
    if expected is not None and not hmac.compare_digest(key.encode("utf-8"), expected.encode("utf-8")):
        svc.sign_ins.failed(address)
        return _sign_in_page("That is not the server's API key.", 401)  # type: ignore[return-value]
    svc.sign_ins.succeeded(address)
    token, _ = svc.console.open()
    response = redirect("/", 303)
    response.set_cookie(
        CONSOLE_COOKIE,
        token,
        max_age=int(svc.console.ttl_seconds),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console/sign-in")
    return response  # type: ignore[return-value]


@bp.post("/console/sign-out")
def sign_out() -> Response:
    """End the session on the server and drop the cookie."""
    session = console_session()
    if session is not None:
        check_csrf(session, request.form.get("csrf"))
        services().console.close(request.cookies[CONSOLE_COOKIE])
    response = redirect("/", 303)
    response.delete_cookie(CONSOLE_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)
    return response  # type: ignore[return-value]


def _ignored_try_knobs(engine: str) -> list[str]:
    """Which of the try-it tab's voice settings the voice model now speaking ignores (a hint, not a refusal)."""
    ignored = [k for k in ignored_knobs() if k in ("exaggeration", "temperature", "cfg_weight")]
    return ignored if engine == "chatterbox" else [*ignored, "max_tokens"]  # only Chatterbox counts speech tokens


def _emotions_by_character() -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for emotion in services().emotions.profiles():
        grouped.setdefault(emotion.character, []).append(emotion.as_json())
    return grouped


def _sign_in_page(error: str | None = None, status: int = 200) -> Response:
    nonce = secrets.token_urlsafe(24)
    body = render_template("sign_in.html", tab=None, csrf=None, error=error, login_nonce=nonce)
    response = Response(body, status=status, mimetype="text/html")
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="Strict", secure=request.is_secure,
        path="/console/sign-in",
    )
    return response


def status_context() -> dict[str, Any]:
    """What the status tab shows: /health's details, the latest calls and their latency chart."""
    svc = services()
    details = health_details(svc)
    turns = svc.recent.latest()
    return {
        "health": details,
        "turns": turns,
        "chart": latency_chart(list(reversed(turns))),
        "now": time.time(),
    }


def latency_chart(turns: list[RecentTurn]) -> dict[str, Any]:
    """Bars for an inline SVG, oldest call first: whole reply time, and time to the first audio inside it."""
    top = max([t.total_seconds for t in turns] + [0.5])
    slot = _CHART_W / max(len(turns), _CHART_MIN_SLOTS)  # a few calls stay slim bars, not slabs
    bars = []
    for i, turn in enumerate(turns):
        total_h = _CHART_H * turn.total_seconds / top
        first = turn.first_audio_seconds or 0.0
        first_h = _CHART_H * min(first, turn.total_seconds) / top
        bars.append(
            {
                "x": round(i * slot + slot * 0.15, 1),
                "w": round(slot * 0.7, 1),
                "total_y": round(_CHART_H - total_h, 1),
                "total_h": round(total_h, 1),
                "first_y": round(_CHART_H - first_h, 1),
                "first_h": round(first_h, 1),
                "label": f"call {turn.number}: first audio {first:.2f} s, whole reply {turn.total_seconds:.2f} s",
            }
        )
    return {"width": _CHART_W, "height": _CHART_H, "top": round(top, 2), "bars": bars}
