"""Rotary dial: pulse trains with bounce at the speed limits, through the pure decoder and gpiozero's MockFactory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from common.config import RotaryConfig
from pi_client.telephone.rotary import DialError, GpioDial, PulseDecoder
from tests.phone_rig import mock_pins as installed_mock_pins

CFG = RotaryConfig(enabled=True)
BOUNCE = (0.0007, 0.0012, 0.0009)
"""Chatter after each edge, in seconds: the contact flips back and forth this often before it rests."""
DIGIT_PAUSE = 0.6
"""Time between digits: the dial winding back up for the next one, in seconds."""


def pulse_train(number: str, pps: float, break_share: float = 0.6, start: float = 1.0) -> list[tuple[float, bool]]:
    """Raw (time, breaking) edges a dial makes for ``number``, each edge chattering as ``BOUNCE`` says."""
    period = 1.0 / pps
    edges: list[tuple[float, bool]] = []
    t = start

    def edge(at: float, level: bool) -> None:
        for i, dt in enumerate(BOUNCE):  # bounce: the new level, the old one back, ...
            edges.append((at, level if i % 2 == 0 else not level))
            at += dt
        edges.append((at, level))

    for digit in number:
        for _ in range(10 if digit == "0" else int(digit)):
            edge(t, True)
            edge(t + period * break_share, False)
            t += period
        t += DIGIT_PAUSE
    return edges


def decode(edges: list[tuple[float, bool]], cfg: RotaryConfig = CFG, ticks: bool = True) -> str:
    """Feed edges to the pure decoder; tick at its deadlines (as the GPIO adapter does) when ``ticks``."""
    decoder = PulseDecoder(cfg)
    digits: list[str] = []
    for at, level in edges:
        for _ in range(10 if ticks else 0):  # a few deadlines at most between two edges
            deadline = decoder.deadline
            if deadline is None or deadline >= at:
                break
            digits.append(decoder.tick(deadline) or "")
        else:
            assert not ticks, "the decoder's deadline does not advance"
        digits.append(decoder.feed(level, at) or "")
    digits.append(decoder.tick(edges[-1][0] + 5.0) or "")
    return "".join(digits)


# --------------------------------------------------------------------------- PulseDecoder (pure)


@pytest.mark.parametrize("pps", [7.0, 10.0, 12.0])
@pytest.mark.parametrize("break_share", [0.6, 0.67])
def test_every_digit_decodes_at_the_speed_limits_through_bounce(pps: float, break_share: float) -> None:
    assert decode(pulse_train("1234567890", pps, break_share)) == "1234567890"


def test_digits_come_out_the_same_without_ticks_between_edges() -> None:
    """Time is in the timestamps, not in when the decoder is called."""
    assert decode(pulse_train("4090", 12.0), ticks=False) == "4090"
    assert decode(pulse_train("4090", 7.0), ticks=False) == "4090"


def test_a_digit_ends_only_after_the_gap() -> None:
    decoder = PulseDecoder(CFG)
    edges = pulse_train("3", 10.0)
    for at, level in edges:
        assert decoder.feed(level, at) is None
    last = edges[-1][0] + CFG.debounce_seconds
    assert decoder.tick(last + CFG.digit_gap_seconds - 0.01) is None
    assert decoder.deadline is not None
    assert decoder.tick(decoder.deadline) == "3"
    assert decoder.deadline is None  # idle: nothing more to wait for


def test_blips_shorter_than_the_debounce_are_not_pulses() -> None:
    decoder = PulseDecoder(CFG)
    for i in range(20):  # a noisy line: 3 ms spikes every 50 ms
        assert decoder.feed(True, 1.0 + i * 0.05) is None
        assert decoder.feed(False, 1.003 + i * 0.05) is None
    assert decoder.tick(5.0) is None


def test_more_than_ten_pulses_is_no_digit() -> None:
    edges = [e for e in pulse_train("9", 10.0) if e[0] < 1.9] + pulse_train("2", 10.0, start=1.9)
    assert decode(edges) == ""  # 9 + 2 pulses ran together: 11 is not a digit


def test_a_long_break_drops_the_digit_in_progress() -> None:
    edges = pulse_train("2", 10.0)
    t = edges[-1][0] + 0.04
    edges += [(t, True), (t + 0.5, False)]  # the line breaks for half a second: not a pulse
    edges += pulse_train("5", 10.0, start=t + 1.0)
    assert decode(edges) == "5"


# --------------------------------------------------------------------------- GpioDial (gpiozero MockFactory)


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    with installed_mock_pins() as factory:
        yield factory


async def _dial_on_pin(mock_pins: MockFactory, cfg: RotaryConfig, edges: list[tuple[float, bool]]) -> str:
    """Drive the mock pin through ``edges`` in real time; return the digits queued."""
    pin = mock_pins.pin(cfg.pin)
    contact_closed_level = not cfg.pull_up  # pulled up: a closed contact reads low

    def drive(breaking: bool) -> None:
        closed = breaking if cfg.pulse_when == "closed" else not breaking
        (pin.drive_high if closed == contact_closed_level else pin.drive_low)()

    drive(False)  # at rest before the dial is watched (opening the pin resets its pull)
    queue: asyncio.Queue[str] = asyncio.Queue()
    dial = GpioDial(cfg)
    drive(False)
    loop = asyncio.get_running_loop()
    dial.start(loop, queue)
    try:
        t0 = loop.time() - edges[0][0] + 0.05
        for at, breaking in edges:
            await asyncio.sleep(max(0.0, t0 + at - loop.time()))
            drive(breaking)
        await asyncio.sleep(cfg.digit_gap_seconds + 0.2)
        digits = []
        while not queue.empty():
            digits.append(queue.get_nowait())
        return "".join(digits)
    finally:
        dial.close()


@pytest.mark.parametrize("pps", [7.0, 12.0])
def test_gpio_dial_decodes_a_bouncing_dial_at_the_speed_limits(mock_pins: MockFactory, pps: float) -> None:
    edges = pulse_train("190", pps)
    got = asyncio.run(asyncio.wait_for(_dial_on_pin(mock_pins, CFG, edges), timeout=30))
    assert got == "190"


@pytest.mark.parametrize(("pulse_when", "pull_up"), [("open", False), ("closed", True), ("closed", False)])
def test_gpio_dial_polarity_is_configurable(mock_pins: MockFactory, pulse_when: str, pull_up: bool) -> None:
    cfg = RotaryConfig(enabled=True, pin=22, pulse_when=pulse_when, pull_up=pull_up)  # type: ignore[arg-type]
    got = asyncio.run(asyncio.wait_for(_dial_on_pin(mock_pins, cfg, pulse_train("32", 10.0)), timeout=30))
    assert got == "32"


def test_gpio_dial_bad_pin_names_the_setting(mock_pins: MockFactory) -> None:
    with pytest.raises(DialError, match=r"pi\.dial\.rotary\.pin: cannot open GPIO99"):
        GpioDial(RotaryConfig(pin=99))
