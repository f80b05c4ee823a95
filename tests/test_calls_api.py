"""The ring API over real HTTP: queue a call, the phone's long-poll takes it, what became of it, limits, restarts."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TIMEOUT = 30


@pytest.fixture
def make_server(start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Any) -> Callable[[], Any]:
    """A server on ``tmp_path``'s data dir; call again for a "restarted" one on the same dir."""
    return lambda: start_server(server_config(ollama.url, tmp_path, calls={"max_queued_per_phone": 2}))


def place(server: RunningServer, **body: Any) -> requests.Response:
    return requests.post(server.url + "/calls", json=body, headers=AUTH, timeout=TIMEOUT)


def next_call(server: RunningServer, phone: str, wait: float = 0.0) -> requests.Response:
    return requests.get(server.url + "/calls/next", params={"phone": phone, "wait": wait}, headers=AUTH,
                        timeout=TIMEOUT)


def status(server: RunningServer, call_id: str) -> str:
    reply = requests.get(f"{server.url}/calls/{call_id}", headers=AUTH, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["status"])


def test_a_queued_call_survives_a_restart_goes_to_its_phone_once_and_a_missed_one_is_reported(
    make_server: Callable[[], RunningServer],
) -> None:
    first = make_server()
    placed = place(first, phone="kitchen", character="operator", reason="Remind them to water the plants.")
    assert placed.status_code == 201, placed.text
    call = placed.json()
    assert (call["status"], call["phone"], call["character"]) == ("queued", "kitchen", "operator")
    assert next_call(first, "hall").status_code == 204  # another phone gets nothing
    first.stop()

    second = make_server()  # the same data dir: the queue is still there
    assert status(second, call["id"]) == "queued"
    taken = next_call(second, "kitchen")
    assert taken.status_code == 200 and taken.json()["id"] == call["id"] and taken.json()["status"] == "ringing"
    assert next_call(second, "kitchen").status_code == 204  # handed over once
    missed = requests.post(f"{second.url}/calls/{call['id']}/missed", headers=AUTH, timeout=TIMEOUT)
    assert missed.status_code == 200 and missed.json()["status"] == "missed"
    listed = requests.get(second.url + "/calls", params={"phone": "kitchen"}, headers=AUTH, timeout=TIMEOUT)
    assert [(c["id"], c["status"]) for c in listed.json()["calls"]] == [(call["id"], "missed")]


def test_long_poll_schedule_cancel_busy_answer_and_limits_with_clear_json(
    make_server: Callable[[], RunningServer], ollama: OllamaStandIn
) -> None:
    server = make_server()
    url = server.url
    # The long-poll wakes for a call placed while it waits; a call for later rings at its time.
    got: list[requests.Response] = []
    poll = threading.Thread(target=lambda: got.append(next_call(server, "den", wait=20.0)))
    poll.start()
    # Placed after the poll began: the waiting phone takes it in that same poll.
    placed = place(server, phone="den", reason="The parcel has arrived.").json()
    poll.join(timeout=TIMEOUT)
    assert got and got[0].status_code == 200 and got[0].json()["id"] == placed["id"]
    assert got[0].json()["character"] == "operator"  # the default character calls when none is named

    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)).isoformat()
    later = place(server, phone="den", reason="Time for tea.", at=soon).json()
    assert next_call(server, "den", wait=0.0).status_code == 204  # not due yet
    due = next_call(server, "den", wait=10.0)
    assert due.status_code == 200 and due.json()["id"] == later["id"]

    call = place(server, phone="attic", reason="Check the oven.").json()
    assert place(server, phone="attic", reason="Again.").status_code == 201
    full = place(server, phone="attic", reason="And again.")
    assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_calls"
    # The handset was off the hook: the call goes back in the queue and is handed over again.
    assert next_call(server, "attic").json()["id"] == call["id"]
    assert requests.post(f"{url}/calls/{call['id']}/busy", headers=AUTH, timeout=TIMEOUT).json()["status"] == "queued"
    again = next_call(server, "attic").json()
    assert again["id"] == call["id"] and again["attempts"] == 2
    cancelled = requests.delete(f"{url}/calls/{call['id']}", headers=AUTH, timeout=TIMEOUT)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    late = requests.post(f"{url}/calls/{call['id']}/answer", headers=AUTH, timeout=TIMEOUT)
    assert late.status_code == 409 and late.json()["error"]["code"] == "call_cancelled"
    assert requests.delete(f"{url}/calls/{call['id']}", headers=AUTH, timeout=TIMEOUT).status_code == 409

    bad = [
        ({"phone": "Kitchen!", "reason": "x"}, 400, "bad_phone"),
        ({"phone": "a", "reason": " "}, 400, "empty_field"),
        ({"phone": "a"}, 400, "missing_field"),
        ({"phone": "a", "reason": "x" * 501}, 413, "text_too_long"),
        ({"phone": "a", "reason": "x", "character": "nobody"}, 404, "unknown_character"),
        ({"phone": "a", "reason": "x", "at": "tomorrow"}, 400, "bad_time"),
        ({"phone": "a", "reason": "x", "at": "2030-01-01T08:00:00"}, 400, "bad_time"),
        ({"phone": "a", "reason": "x", "ttl_seconds": -1}, 400, "out_of_range"),
    ]
    for body, code, error in bad:
        reply = place(server, **body)
        assert (reply.status_code, reply.json()["error"]["code"]) == (code, error), body
    assert requests.post(url + "/calls", json={"phone": "a", "reason": "x"}, timeout=TIMEOUT).status_code == 401
    assert requests.get(url + "/calls/next", params={"phone": "a"}, timeout=TIMEOUT).status_code == 401
    assert next_call(server, "a", wait=99).json()["error"]["code"] == "out_of_range"
    assert requests.get(f"{url}/calls/{'0' * 32}", headers=AUTH, timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{url}/calls/..%2Fetc", headers=AUTH, timeout=TIMEOUT).status_code == 404

    # Answered while ringing: the character speaks first, with the reason in its prompt.
    ollama.script("Hello, this is the operator, the oven needs checking. ")
    ringing = next_call(server, "attic").json()
    with requests.post(f"{url}/calls/{ringing['id']}/answer", json={}, headers=AUTH, timeout=TIMEOUT) as answered:
        assert answered.status_code == 200 and answered.headers["Content-Type"] == "audio/wav"
        assert len(answered.content) > 8000 and answered.headers["X-Character"] == "operator"
    messages = ollama.chat_requests()[-1].messages
    assert "Again." in messages[0]["content"] and "speak first" in messages[0]["content"].lower()
    assert status(server, ringing["id"]) == "answered"
    server.wait_slots_free()
