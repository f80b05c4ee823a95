"""The line at a shared voice model: first audio first, then the oldest reply, a few places at once."""

from __future__ import annotations

import threading
import time

import pytest

from common.priority_gate import PriorityGate
from tests.helpers import wait_for

BOUND = 30.0


def _queue(gate: PriorityGate, order: list[str], name: str, first: bool, since: float | None) -> threading.Thread:
    """A caller that waits for a place, notes its turn, and gives the place back at once."""

    def run() -> None:
        gate.acquire(first, since=since)
        order.append(name)
        gate.release()

    thread = threading.Thread(target=run, name=f"caller-{name}", daemon=True)
    thread.start()
    return thread


def _line_up(gate: PriorityGate, callers: list[tuple[str, bool, float | None]]) -> list[str]:
    """Hold the only place, line ``callers`` up one by one, let go; the order they got the place in."""
    order: list[str] = []
    gate.acquire(first=False)
    threads = []
    for count, (name, first, since) in enumerate(callers, start=1):
        threads.append(_queue(gate, order, name, first, since))
        wait_for(lambda count=count: gate.waiting() == count, BOUND, f"{count} in line")
    gate.release()
    for thread in threads:
        thread.join(BOUND)
    return order


def test_a_first_audio_overtakes_later_sentences_that_waited_longer() -> None:
    order = _line_up(PriorityGate(), [("later-a", False, None), ("later-b", False, None), ("first-c", True, None)])
    assert order == ["first-c", "later-a", "later-b"]


def test_among_later_sentences_the_oldest_reply_goes_first() -> None:
    # Replies that began together would otherwise take one sentence each in turn and all end at once.
    now = time.monotonic()
    order = _line_up(PriorityGate(), [("young", False, now), ("old", False, now - 5.0), ("first", True, now)])
    assert order == ["first", "old", "young"]


def test_two_places_take_two_callers_at_once() -> None:
    gate = PriorityGate(slots=2)
    gate.acquire(first=False)
    gate.acquire(first=True)  # would wait for ever with one place
    assert gate.busy() == 2
    gate.release()
    gate.release()
    assert gate.busy() == 0


def test_a_caller_who_hangs_up_leaves_the_line() -> None:
    gate = PriorityGate()
    gate.acquire(first=False)
    hung_up = threading.Event()
    left: list[BaseException] = []

    def check() -> None:
        if hung_up.is_set():
            raise RuntimeError("hung up")

    def wait() -> None:
        try:
            gate.acquire(first=True, check=check)
        except RuntimeError as err:
            left.append(err)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    wait_for(lambda: gate.waiting() == 1, BOUND, "the caller in line")
    hung_up.set()
    thread.join(BOUND)
    assert left and gate.waiting() == 0
    gate.release()
    gate.acquire(first=False)  # the place is free again
    gate.release()


def test_a_gate_needs_a_place() -> None:
    with pytest.raises(ValueError):
        PriorityGate(slots=0)
