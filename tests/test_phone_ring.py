"""The phone rings: a character calls through the ring API, the bell (gpiozero mock pin) rings the cadence,
lifting the handset hears the character speak first about why it called; unanswered, it gives up.

The real server on 127.0.0.1 (Piper voice, the Ollama stand-in), the real phone in-process, the hook
and the bell on gpiozero's MockFactory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from common.config import ClientConfig, ConfigError, RingConfig, ScheduledCallConfig
from common.protocol import ANSWERED_CUE
from pi_client.call.machine import Answered, Ask, CallPolicy, CheckHealth, Outcome, State, next_state
from pi_client.call.schedule import Scheduler, next_time
from pi_client.server.client import ServerClient
from pi_client.server.ring_poll import check_ring_settings
from tests.helpers import mock_pins
from tests.helpers import word_set as words
from tests.ollama_standin import OllamaStandIn
from tests.phone_rig import build_phone, phone_running, until
from tests.server_rig import ServerProcess
from tests.test_phone_dialing import Earpiece

WAIT = 120.0
HOOK_PIN = 17
BELL_PIN = 22
ON, OFF = 0.3, 0.9
"""A short ring cadence for the tests (a real phone: 2 s on, 4 s off)."""


def ring_settings(phone: str, rings: int) -> dict[str, Any]:
    return {"ring": {"phone_id": phone, "bell_pin": BELL_PIN, "cadence": [ON, OFF], "rings": rings,
                     "poll_wait_seconds": 2.0}}


def place_call(server: ServerProcess, phone: str, reason: str) -> dict[str, Any]:
    reply = requests.post(server.url + "/calls", json={"phone": phone, "character": "operator", "reason": reason},
                          headers={"Authorization": f"Bearer {server.key}"}, timeout=30)
    assert reply.status_code == 201, reply.text
    return reply.json()  # type: ignore[no-any-return]


def call_status(server: ServerProcess, call_id: str) -> str:
    reply = requests.get(f"{server.url}/calls/{call_id}", headers={"Authorization": f"Bearer {server.key}"}, timeout=30)
    return str(reply.json()["status"])


async def until_status(server: ServerProcess, call_id: str, status: str) -> None:
    """Wait (bounded) until the server says the call is ``status``, asking off the event loop (the bell runs on it)."""
    for _ in range(int(WAIT / 0.1)):
        if await asyncio.to_thread(call_status, server, call_id) == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id} never became {status}")


def rings(bell: Any) -> int:
    """How many times the bell started ringing (rising edges on its pin)."""
    return sum(1 for change in bell.states[1:] if change.state)


def on_off_seconds(bell: Any) -> list[tuple[bool, float]]:
    """Each level the bell pin held and for how long, up to its last change.

    gpiozero's mock pin records each change with the time since the previous one.
    """
    return [(before.state, after.timestamp) for before, after in zip(bell.states, bell.states[1:], strict=False)]


def test_lifting_the_handset_on_a_ringing_call_asks_for_the_characters_first_words_even_with_a_directory() -> None:
    answered = Answered("c0ffee", "luna")
    for policy in (CallPolicy(), CallPolicy(dialing=True)):  # no dial tone for a call that rang
        assert next_state(State.ON_HOOK, answered, policy) == (State.REPLYING, [CheckHealth(), Ask(call_id="c0ffee")])
    assert next_state(State.LISTENING, answered) == (State.LISTENING, [])  # a late one changes nothing


def test_a_call_rings_the_bell_and_lifting_the_handset_hears_the_character_speak_first_about_why(
    call_server: ServerProcess,
    call_standin: OllamaStandIn,
    call_whisper: Any,
    call_question_wav: Path,
    tmp_path: Path,
) -> None:
    call_standin.script("Hello, this is the operator. Your parcel has arrived at the front desk. ")
    sink = Earpiece(tmp_path / "r.wav")
    seen: dict[str, Any] = {}

    async def scenario(pins: Any) -> Any:
        rig = build_phone(call_server, call_question_wav, call_whisper, tmp_path, sink, gated=True,
                          pi=ring_settings("ring-answered", rings=6), ring=True)
        phone, talk, bell = rig.phone, rig.talk, pins.pin(BELL_PIN)
        assert talk is not None
        async with phone_running(rig):
            placed = await asyncio.to_thread(place_call, call_server, "ring-answered", "Tell them the parcel arrived.")
            seen["call"] = placed["id"]
            await until(lambda: rings(bell) == 2 and not bell.state, "two rings", WAIT)
            pins.pin(HOOK_PIN).drive_low()  # lifted between rings
            seen["rings_at_lift"] = rings(bell)
            await until(lambda: phone.state is State.LISTENING, "the character's first words", WAIT)
            seen["status"] = await asyncio.to_thread(call_status, call_server, placed["id"])
            seen["first_chat"] = call_standin.chat_requests()[-1]
            call_standin.script("The front desk is on the ground floor. ")
            talk.put_nowait(None)  # the caller answers back: the call goes on with the same character
            await until(lambda: len(phone.turns) == 2 and phone.state is State.LISTENING, "the reply", WAIT)
            seen["second_chat"] = call_standin.chat_requests()[-1]
            # A call placed while the handset is up does not ring (the line is busy) until it is put down.
            later = await asyncio.to_thread(place_call, call_server, "ring-answered", "One more thing.")
            await asyncio.sleep(2.0 + ON + OFF)  # past any poll that was under way when the handset was lifted
            seen["levels"] = on_off_seconds(bell)
            seen["later_status"] = await asyncio.to_thread(call_status, call_server, later["id"])
            pins.pin(HOOK_PIN).drive_high()
            await until(lambda: phone.state is State.ON_HOOK, "the hang-up", 10)
            await until(lambda: rings(bell) == 3, "the later call's ring", WAIT)
            return phone

    with mock_pins() as pins:
        phone = asyncio.run(asyncio.wait_for(scenario(pins), WAIT * 2))
        bell = pins.pin(BELL_PIN)
        assert rings(bell) == 3  # the later call, once the handset was down
    levels = seen["levels"]
    assert seen["rings_at_lift"] == 2 and seen["later_status"] == "queued"
    # The cadence: on, off, on, then silence from the lift (in the second ring's off time) on.
    assert [on for on, _ in levels] == [False, True, False, True]
    assert [s for _, s in levels[1:]] == pytest.approx([ON, OFF, ON], abs=0.25)
    assert seen["status"] == "answered"
    first = seen["first_chat"].messages
    assert "Tell them the parcel arrived." in first[0]["content"]  # the reason, in the character's prompt
    assert first[-1] == {"role": "user", "content": ANSWERED_CUE}
    # The first thing in the earpiece is the character (no dial tone, no ringback), in the server's voice.
    said = words(sink.transcript(call_whisper, 0))
    assert {"parcel", "arrived"} <= said, said
    assert [(t.outcome, t.character) for t in phone.turns] == [(Outcome.DONE, "operator")] * 2
    history = [m["content"] for m in seen["second_chat"].messages[1:]]
    assert history[0] == ANSWERED_CUE and "parcel" in history[1]  # the call's first words stay in its history


def test_an_unanswered_call_rings_n_times_then_the_server_hears_it_was_missed_and_a_cancelled_one_stops(
    call_server: ServerProcess, call_standin: OllamaStandIn, call_whisper: Any, call_question_wav: Path, tmp_path: Path
) -> None:
    chats_before = len(call_standin.chat_requests())
    sink = Earpiece(tmp_path / "r.wav")
    seen: dict[str, Any] = {}

    async def scenario(pins: Any) -> None:
        rig = build_phone(call_server, call_question_wav, call_whisper, tmp_path, sink,
                          pi=ring_settings("ring-missed", rings=3), ring=True)
        phone, bell = rig.phone, pins.pin(BELL_PIN)
        async with phone_running(rig):
            missed = await asyncio.to_thread(place_call, call_server, "ring-missed", "Wake up!")
            await until_status(call_server, missed["id"], "missed")
            seen["rings"], seen["state"] = rings(bell), phone.state
            # Cancelled after its first ring: the bell stops at the end of that ring.
            cancelled = await asyncio.to_thread(place_call, call_server, "ring-missed", "Never mind.")
            await until(lambda: rings(bell) == seen["rings"] + 1, "the next call's first ring", WAIT)
            auth = {"Authorization": f"Bearer {call_server.key}"}
            gone = await asyncio.to_thread(
                requests.delete, f"{call_server.url}/calls/{cancelled['id']}", headers=auth, timeout=30
            )
            assert gone.status_code == 200, gone.text
            await asyncio.sleep(2 * (ON + OFF))  # long enough for its second ring, were it to come
            seen["after_cancel"] = rings(bell)
            seen["cancelled_status"] = await asyncio.to_thread(call_status, call_server, cancelled["id"])

    with mock_pins() as pins:
        asyncio.run(asyncio.wait_for(scenario(pins), WAIT * 2))
        assert not pins.pin(BELL_PIN).state  # silent at the end
    assert seen["rings"] == 3 and seen["state"] is State.ON_HOOK
    assert seen["after_cancel"] == 4  # its first ring only
    assert seen["cancelled_status"] == "cancelled"
    assert sink.parts == [] and len(call_standin.chat_requests()) == chats_before  # nobody spoke


# --------------------------------------------------------------------------- scheduled calls


def test_a_scheduled_time_of_day_comes_next_today_or_tomorrow_and_a_bad_one_is_named_at_start() -> None:
    now = dt.datetime(2026, 11, 29, 7, 30)
    assert next_time("07:30", now) == dt.datetime(2026, 11, 30, 7, 30)  # just now: tomorrow
    assert next_time("7:31", now) == dt.datetime(2026, 11, 29, 7, 31)
    assert next_time("00:00", dt.datetime(2026, 12, 31, 23, 59, 59)) == dt.datetime(2027, 1, 1)
    bad = RingConfig(scheduled=(ScheduledCallConfig(at="25:00"),))
    with pytest.raises(ConfigError, match=r"pi\.ring\.scheduled\[0\]\.at"):
        check_ring_settings(bad)


def test_a_scheduled_call_is_placed_with_the_server_at_its_time(call_server: ServerProcess) -> None:
    ring = RingConfig(phone_id="ring-scheduled", scheduled=(
        ScheduledCallConfig(at="07:30", character="operator", reason="Wake them up gently."),
    ))
    started, base = time.monotonic(), dt.datetime(2026, 11, 29, 7, 29, 59, 500000)
    client = ServerClient(call_server.url, call_server.key, ClientConfig())
    auth = {"Authorization": f"Bearer {call_server.key}"}

    def placed() -> list[dict[str, Any]]:
        reply = requests.get(call_server.url + "/calls", params={"phone": "ring-scheduled"}, headers=auth, timeout=30)
        return reply.json()["calls"]  # type: ignore[no-any-return]

    async def scenario() -> list[dict[str, Any]]:
        clock = lambda: base + dt.timedelta(seconds=time.monotonic() - started)  # noqa: E731 - half a second to 07:30
        task = asyncio.create_task(Scheduler([client], ring, now=clock).run())
        try:
            for _ in range(int(WAIT / 0.1)):
                calls = await asyncio.to_thread(placed)
                if calls:
                    await asyncio.sleep(0.5)  # and only once
                    return await asyncio.to_thread(placed)
                await asyncio.sleep(0.1)
            raise AssertionError("no call was placed")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        calls = asyncio.run(asyncio.wait_for(scenario(), WAIT))
    finally:
        client.close()
    assert [(c["character"], c["reason"], c["status"]) for c in calls] == [
        ("operator", "Wake them up gently.", "queued")
    ]
