"""The console over real HTTP: sign-in, the session cookie and CSRF, the status tab, /characters edits.

The browser-driven flow is in test_console_browser.py; these cover what a browser would hide.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn
from tests.server_rig import start_server as start_server_process

TIMEOUT = 30
KEY_HEADERS = {"Authorization": f"Bearer {TEST_KEY}"}


def sign_in(url: str, key: str = TEST_KEY) -> tuple[requests.Session, str, requests.Response]:
    """Sign in as a browser would: load the form, post the key with its nonce. (session, csrf, answer)."""
    browser = requests.Session()
    form = browser.get(url + "/", timeout=TIMEOUT)
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', form.text)
    assert nonce, form.text
    answer = browser.post(url + "/console/sign-in", data={"key": key, "login_nonce": nonce.group(1)}, timeout=TIMEOUT)
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', answer.text)
    return browser, (csrf.group(1) if csrf else ""), answer


@pytest.fixture
def console(start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Path) -> RunningServer:
    return start_server(server_config(ollama.url, tmp_path))


def test_sign_in_gives_a_session_cookie_not_the_key(console: RunningServer) -> None:
    page = requests.get(console.url + "/", timeout=TIMEOUT)
    assert page.status_code == 200 and 'type="password"' in page.text and "csrf-token" not in page.text
    browser, csrf, answer = sign_in(console.url)
    assert answer.status_code == 200 and "Latest calls" in answer.text and csrf
    set_cookie = answer.history[0].headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Max-Age=43200" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP here; under TLS it is set (request.is_secure)
    assert TEST_KEY not in set_cookie and TEST_KEY not in answer.text
    assert all(TEST_KEY not in (c.value or "") for c in browser.cookies)
    assert "script-src 'self'" in answer.headers["Content-Security-Policy"]


def test_a_wrong_key_or_a_forged_form_gets_no_session(console: RunningServer) -> None:
    browser, _, answer = sign_in(console.url, key="not-the-key")
    assert answer.status_code == 401 and "is not the server" in answer.text
    assert "not-the-key" not in answer.text  # what was typed is not echoed back into the form
    assert "ai_telephone_console" not in browser.cookies
    forged = requests.post(
        console.url + "/console/sign-in", data={"key": TEST_KEY, "login_nonce": "x"}, timeout=TIMEOUT
    )
    assert forged.status_code == 403 and "ai_telephone_console" not in forged.cookies


def test_nothing_without_the_cookie(console: RunningServer) -> None:
    for path in ("/console/characters", "/console/voices", "/console/try"):
        page = requests.get(console.url + path, allow_redirects=False, timeout=TIMEOUT)
        assert page.status_code == 303 and page.headers["Location"].endswith("/")
    panel = requests.get(console.url + "/console/status-panel", timeout=TIMEOUT)
    assert panel.status_code == 401 and panel.json()["error"]["code"] == "signed_out"
    assert panel.headers["HX-Redirect"] == "/"  # the polling page goes to the sign-in form
    made = requests.post(console.url + "/characters", json={"id": "x"}, timeout=TIMEOUT)
    assert made.status_code == 401
    forged = requests.get(console.url + "/characters", cookies={"ai_telephone_console": "guess"}, timeout=TIMEOUT)
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "signed_out"


def test_the_cookie_needs_the_csrf_token_for_changes(console: RunningServer) -> None:
    browser, csrf, _ = sign_in(console.url)
    assert browser.get(console.url + "/characters", timeout=TIMEOUT).status_code == 200  # reads need no token
    refused = browser.post(console.url + "/characters", json={"id": "nosy"}, timeout=TIMEOUT)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = browser.post(console.url + "/characters", json={"id": "nosy"}, headers={"X-CSRF-Token": "no"}, timeout=30)
    assert wrong.status_code == 403
    made = browser.post(console.url + "/characters", json={"id": "nosy"}, headers={"X-CSRF-Token": csrf}, timeout=30)
    assert made.status_code == 201, made.text
    out = browser.post(console.url + "/console/sign-out", data={"csrf": "wrong"}, timeout=TIMEOUT)
    assert out.status_code == 403  # signing out is a change too
    assert browser.get(console.url + "/console/try", allow_redirects=False, timeout=TIMEOUT).status_code == 200


def test_sign_out_ends_the_session_on_the_server(console: RunningServer) -> None:
    browser, csrf, _ = sign_in(console.url)
    token = browser.cookies["ai_telephone_console"]
    out = browser.post(console.url + "/console/sign-out", data={"csrf": csrf}, timeout=TIMEOUT)
    assert out.status_code == 200 and 'type="password"' in out.text
    replayed = requests.get(console.url + "/characters", cookies={"ai_telephone_console": token}, timeout=TIMEOUT)
    assert replayed.status_code == 401


def test_the_key_still_works_and_wins_over_a_cookie(console: RunningServer) -> None:
    assert requests.get(console.url + "/characters", headers=KEY_HEADERS, timeout=TIMEOUT).status_code == 200
    made = requests.post(
        console.url + "/characters", json={"id": "keyed"}, headers=KEY_HEADERS,
        cookies={"ai_telephone_console": "stale"}, timeout=TIMEOUT,
    )
    assert made.status_code == 201  # the key holder needs no CSRF token
    wrong = requests.get(console.url + "/characters", headers={"X-API-Key": "wrong"}, timeout=TIMEOUT)
    assert wrong.status_code == 401


def test_status_shows_each_call_with_its_timings(console: RunningServer, ollama: OllamaStandIn) -> None:
    ollama.script("The weather is fine today. ", "Bring a hat anyway.")
    browser, _, page = sign_in(console.url)
    assert "No calls yet" in page.text and "piper" in page.text
    reply = requests.post(
        console.url + "/process-text", json={"text": "How is the weather?"}, headers=KEY_HEADERS, timeout=TIMEOUT
    )
    assert reply.status_code == 200 and len(reply.content) > 10_000
    panel = browser.get(console.url + "/console/status-panel", timeout=TIMEOUT).text
    assert "How is the weather?" in panel and "Bring a hat anyway." in panel
    assert panel.count('class="bar-total"') == 1 and "first audio" in panel


def test_a_persona_cannot_inject_markup(console: RunningServer) -> None:
    made = requests.post(
        console.url + "/characters",
        json={"id": "evil", "display_name": "<script>alert(1)</script>"},
        headers=KEY_HEADERS,
        timeout=TIMEOUT,
    )
    assert made.status_code == 201
    browser, _, _ = sign_in(console.url)
    page = browser.get(console.url + "/console/characters", timeout=TIMEOUT).text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _call(url: str, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, url + path, json=body, headers=KEY_HEADERS, timeout=TIMEOUT)


def test_characters_are_created_changed_and_deleted(console: RunningServer) -> None:
    made = _call(console.url, "POST", "/characters", {
        "id": "luna", "display_name": "Luna", "persona": "You are Luna, a dreamy night owl.",
        "greeting": "Hello from the moon.", "exaggeration": 0.9, "temperature": 0.7, "cfg_weight": 0.3,
    })
    assert made.status_code == 201, made.text
    assert made.json() | {"ignored_parameters": []} == made.json() | {
        "id": "luna", "display_name": "Luna", "exaggeration": 0.9, "cfg_weight": 0.3, "temperature": 0.7,
        "greeting": "Hello from the moon.", "persona": "You are Luna, a dreamy night owl.", "ignored_parameters": [],
    }
    changed = _call(console.url, "PUT", "/characters/luna", {"greeting": "Moonlight speaking."})
    assert changed.status_code == 200 and changed.json()["greeting"] == "Moonlight speaking."
    assert changed.json()["persona"] == "You are Luna, a dreamy night owl."
    greeting = _call(console.url, "GET", "/characters/luna/greeting")
    assert greeting.status_code == 200 and greeting.headers["Content-Type"] == "audio/wav"
    assert _call(console.url, "DELETE", "/characters/luna").status_code == 204
    ids = [c["id"] for c in _call(console.url, "GET", "/characters").json()["characters"]]
    assert ids == ["operator"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/characters", {"id": "Bad Id"}, 400, "bad_character_id"),
        ("POST", "/characters", {"id": "ok\n"}, 400, "bad_character_id"),
        ("POST", "/characters", {"id": "operator"}, 409, "character_conflict"),
        ("POST", "/characters", {"id": "x", "exaggeration": 9}, 400, "out_of_range"),
        ("POST", "/characters", {"id": "x", "temperature": True}, 400, "bad_field"),
        ("POST", "/characters", {"id": "x", "persona": "p" * 4001}, 413, "text_too_long"),
        ("POST", "/characters", {"id": "x", "display_name": " "}, 400, "empty_field"),
        ("POST", "/characters", {"id": "x", "mood": "happy"}, 400, "unknown_field"),
        ("POST", "/characters", {"id": "x", "voice": "nobody"}, 404, "unknown_voice"),
        ("PUT", "/characters/ghost", {"greeting": "hi"}, 404, "unknown_character"),
        ("DELETE", "/characters/operator", None, 409, "character_conflict"),
        ("DELETE", "/characters/ghost", None, 404, "unknown_character"),
    ],
)
def test_bad_character_requests_get_json_errors(
    console: RunningServer, method: str, path: str, body: Any, status: int, code: str
) -> None:
    answer = _call(console.url, method, path, body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    ids = [c["id"] for c in _call(console.url, "GET", "/characters").json()["characters"]]
    assert ids == ["operator"]  # nothing half-made


def test_edits_survive_a_restart_and_config_characters_stay_the_defaults(tmp_path: Path, ollama: OllamaStandIn) -> None:
    characters = {
        "operator": {"display_name": "Operator"},
        "sage": {"display_name": "Sage", "persona": "You are wise."},
        "echo": {"display_name": "Echo"},
    }
    server = start_server_process(tmp_path, ollama.url, {"characters": characters})
    key = {"Authorization": f"Bearer {server.key}"}
    try:
        assert requests.post(server.url + "/characters", json={"id": "zephyr", "temperature": 1.1},
                             headers=key, timeout=TIMEOUT).status_code == 201
        assert requests.put(server.url + "/characters/sage", json={"display_name": "Old Sage"},
                            headers=key, timeout=TIMEOUT).status_code == 200
        assert requests.delete(server.url + "/characters/echo", headers=key, timeout=TIMEOUT).status_code == 204
    finally:
        server.stop()
    assert not list((tmp_path / "data").glob(".characters.json.*"))  # no debris from the atomic writes
    again = start_server_process(tmp_path, ollama.url, {"characters": characters})
    try:
        listing = requests.get(again.url + "/characters", headers={"Authorization": f"Bearer {again.key}"},
                               timeout=TIMEOUT).json()["characters"]
    finally:
        again.stop()
    by_id = {c["id"]: c for c in listing}
    assert sorted(by_id) == ["operator", "sage", "zephyr"]
    assert by_id["sage"]["display_name"] == "Old Sage" and by_id["sage"]["persona"] == "You are wise."
    assert by_id["zephyr"]["temperature"] == 1.1 and by_id["zephyr"]["display_name"] == "Zephyr"


def test_the_vendored_htmx_is_served_as_recorded(console: RunningServer) -> None:
    """The page's one library is served from the server itself (offline), byte for byte what SOURCE.md records."""
    vendor = Path(__file__).resolve().parent.parent / "cloud_server" / "web" / "static" / "vendor" / "htmx"
    recorded = re.search(r"sha256 of `htmx.min.js`: `([0-9a-f]{64})`", (vendor / "SOURCE.md").read_text())
    browser, _, page = sign_in(console.url)
    assert '/static/vendor/htmx/htmx.min.js"' in page.text
    served = browser.get(console.url + "/static/vendor/htmx/htmx.min.js", timeout=TIMEOUT)
    assert served.status_code == 200 and recorded is not None
    assert hashlib.sha256(served.content).hexdigest() == recorded.group(1)
    assert (vendor / "LICENSE").read_text().startswith("Zero-Clause BSD")
