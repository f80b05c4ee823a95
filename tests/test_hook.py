"""Hook switch: the pure debouncer with numbers, GpioHook through gpiozero's MockFactory, KeyboardHook via a pipe."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from common.config import HookConfig
from pi_client.telephone.hook import Debouncer, GpioHook, HookError, HookEvent, KeyboardHook
from tests.helpers import mock_pins as installed_mock_pins

TIMEOUT = 2.0
QUIET = 0.25  # "must not happen" window: five times the debounce


def _run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout=20))


# --------------------------------------------------------------------------- Debouncer (pure)


def test_debouncer_reports_change_only_after_it_held() -> None:
    d = Debouncer(0.05)
    assert d.update(True, 0.00) is None
    assert d.update(True, 0.049) is None
    assert d.update(True, 0.05) is True
    assert d.state is True
    assert d.update(True, 0.20) is None  # no repeat while it stays


def test_debouncer_ignores_bounce_and_restarts_the_wait() -> None:
    d = Debouncer(0.05)
    # contact chatter: 0→1→0→1→0→1 within 30 ms, then held
    for t, level in [(0.000, True), (0.005, False), (0.012, True), (0.020, False), (0.030, True)]:
        assert d.update(level, t) is None
    assert d.update(True, 0.079) is None  # 49 ms since the last edge
    assert d.update(True, 0.080) is True


def test_debouncer_ignores_a_short_blip() -> None:
    d = Debouncer(0.05, initial=True)
    assert d.update(False, 1.00) is None
    assert d.update(True, 1.02) is None  # back to the stable level: the blip is forgotten
    assert d.update(True, 1.50) is None
    assert d.state is True
    assert not d.pending


def test_debouncer_both_directions() -> None:
    d = Debouncer(0.1)
    assert d.update(True, 0.0) is None
    assert d.update(True, 0.1) is True
    assert d.update(False, 0.5) is None
    assert d.update(False, 0.65) is False


# --------------------------------------------------------------------------- GpioHook (gpiozero MockFactory)


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    """gpiozero's real mock pin factory, installed for one test."""
    with installed_mock_pins() as factory:
        yield factory


async def _next(queue: asyncio.Queue[HookEvent]) -> HookEvent:
    return await asyncio.wait_for(queue.get(), timeout=TIMEOUT)


async def _nothing(queue: asyncio.Queue[HookEvent]) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(queue.get(), timeout=QUIET)


@pytest.mark.parametrize(
    ("lifted_when", "pull_up"),
    [("closed", True), ("open", True), ("closed", False), ("open", False)],
)
def test_gpio_hook_lift_and_put_down(mock_pins: MockFactory, lifted_when: str, pull_up: bool) -> None:
    _run(_gpio_hook_lift_and_put_down(mock_pins, lifted_when, pull_up))


async def _gpio_hook_lift_and_put_down(mock_pins: MockFactory, lifted_when: str, pull_up: bool) -> None:
    cfg = HookConfig(pin=17, lifted_when=lifted_when, pull_up=pull_up, debounce_seconds=0.05)  # type: ignore[arg-type]
    pin = mock_pins.pin(17)
    # Contact closed: pulled-up pin reads low; pulled-down pin reads high.
    close_contact = pin.drive_low if pull_up else pin.drive_high
    open_contact = pin.drive_high if pull_up else pin.drive_low
    lift, put_down = (close_contact, open_contact) if lifted_when == "closed" else (open_contact, close_contact)
    queue: asyncio.Queue[HookEvent] = asyncio.Queue()
    hook = GpioHook(cfg)
    hook.start(asyncio.get_running_loop(), queue)
    put_down()  # the handset rests on the cradle as the phone starts (opening the pin resets its pull)
    try:
        await _nothing(queue)
        lift()
        assert await _next(queue) is HookEvent.LIFTED
        put_down()
        assert await _next(queue) is HookEvent.PUT_DOWN
        await _nothing(queue)
    finally:
        hook.close()


def test_gpio_hook_bounce_gives_one_event(mock_pins: MockFactory) -> None:
    _run(_gpio_hook_bounce_gives_one_event(mock_pins))


async def _gpio_hook_bounce_gives_one_event(mock_pins: MockFactory) -> None:
    cfg = HookConfig(pin=22, lifted_when="closed", pull_up=True, debounce_seconds=0.05)
    pin = mock_pins.pin(22)
    queue: asyncio.Queue[HookEvent] = asyncio.Queue()
    hook = GpioHook(cfg)
    hook.start(asyncio.get_running_loop(), queue)
    try:
        for _ in range(4):  # the cradle chatters for ~40 ms while lifting
            pin.drive_low()
            await asyncio.sleep(0.005)
            pin.drive_high()
            await asyncio.sleep(0.005)
        pin.drive_low()
        assert await _next(queue) is HookEvent.LIFTED
        await _nothing(queue)
    finally:
        hook.close()


def test_gpio_hook_ignores_a_blip_shorter_than_debounce(mock_pins: MockFactory) -> None:
    _run(_gpio_hook_ignores_a_blip_shorter_than_debounce(mock_pins))


async def _gpio_hook_ignores_a_blip_shorter_than_debounce(mock_pins: MockFactory) -> None:
    cfg = HookConfig(pin=27, lifted_when="closed", pull_up=True, debounce_seconds=0.05)
    pin = mock_pins.pin(27)
    queue: asyncio.Queue[HookEvent] = asyncio.Queue()
    hook = GpioHook(cfg)
    hook.start(asyncio.get_running_loop(), queue)
    try:
        pin.drive_low()
        await asyncio.sleep(0.01)
        pin.drive_high()
        await _nothing(queue)
    finally:
        hook.close()


def test_gpio_hook_reports_a_handset_lifted_before_start(mock_pins: MockFactory) -> None:
    _run(_gpio_hook_reports_a_handset_lifted_before_start(mock_pins))


async def _gpio_hook_reports_a_handset_lifted_before_start(mock_pins: MockFactory) -> None:
    hook = GpioHook(HookConfig(pin=17, debounce_seconds=0.05))  # the pin is open, nothing is watching yet
    mock_pins.pin(17).drive_low()  # lifted (contact closed): no edge reaches anyone
    queue: asyncio.Queue[HookEvent] = asyncio.Queue()
    hook.start(asyncio.get_running_loop(), queue)
    try:
        assert await _next(queue) is HookEvent.LIFTED
        await _nothing(queue)
    finally:
        hook.close()


def test_gpio_hook_close_stops_events_and_frees_the_pin(mock_pins: MockFactory) -> None:
    _run(_gpio_hook_close_stops_events_and_frees_the_pin(mock_pins))


async def _gpio_hook_close_stops_events_and_frees_the_pin(mock_pins: MockFactory) -> None:
    queue: asyncio.Queue[HookEvent] = asyncio.Queue()
    hook = GpioHook(HookConfig(pin=17, debounce_seconds=0.05))
    hook.start(asyncio.get_running_loop(), queue)
    hook.close()
    mock_pins.pin(17).drive_low()
    await _nothing(queue)
    again = GpioHook(HookConfig(pin=17, debounce_seconds=0.05))  # the pin is free to reopen
    again.start(asyncio.get_running_loop(), queue)
    mock_pins.pin(17).drive_low()
    try:
        assert await _next(queue) is HookEvent.LIFTED
    finally:
        again.close()


def test_gpio_hook_bad_pin_names_the_setting(mock_pins: MockFactory) -> None:
    with pytest.raises(HookError, match=r"pi\.hook\.pin: cannot open GPIO99"):
        GpioHook(HookConfig(pin=99))


# --------------------------------------------------------------------------- KeyboardHook


def test_keyboard_hook_enter_toggles() -> None:
    _run(_keyboard_hook_enter_toggles())


async def _keyboard_hook_enter_toggles() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as reader, os.fdopen(write_fd, "w") as writer:
        queue: asyncio.Queue[HookEvent] = asyncio.Queue()
        hook = KeyboardHook(reader)
        hook.start(asyncio.get_running_loop(), queue)
        try:
            writer.write("\n")
            writer.flush()
            assert await _next(queue) is HookEvent.LIFTED
            writer.write("\n")
            writer.flush()
            assert await _next(queue) is HookEvent.PUT_DOWN
            hook.close()
            writer.write("\n")
            writer.flush()
            await _nothing(queue)
        finally:
            hook.close()
