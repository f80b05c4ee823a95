"""A rotary dial: its pulse contact on a GPIO pin, decoded into digits on an asyncio queue.

A dial breaks the line N times for digit N (10 times for 0), about 10 pulses a second at a
60/40 break/make ratio; a digit ends when the pulses stop. :class:`PulseDecoder` is the pure,
clock-free core (feed it levels with timestamps); :class:`GpioDial` reads the pin through
gpiozero and debounces with the hook's :class:`~pi_client.telephone.hook.Debouncer`, since the
mock pin factory ignores ``bounce_time`` and real dial contacts chatter.
"""

from __future__ import annotations

import asyncio
import logging

from common.config import RotaryConfig
from pi_client.telephone.contact import GpioContact
from pi_client.telephone.hook import Debouncer

_LOGGER = logging.getLogger(__name__)

MAX_PULSES = 10
"""A dial gives at most ten pulses (digit 0); more means two digits ran together or a fault."""


class DialError(RuntimeError):
    """The dial's pin cannot be opened; the message names the setting."""


class PulseDecoder:
    """Turns debounced pulse-contact levels into digits; times are seconds on any monotonic clock.

    ``breaking`` is True while the contact is in its pulse state (the line broken). Call
    :meth:`feed` on every raw edge and :meth:`tick` at :attr:`deadline`; each returns a finished
    digit ("0"-"9") or None.
    """

    def __init__(self, cfg: RotaryConfig) -> None:
        self._cfg = cfg
        self._debouncer = Debouncer(cfg.debounce_seconds, initial=False)
        self._raw = False
        self._count = 0
        self._since = 0.0
        """When the stable level last changed."""

    def feed(self, breaking: bool, now: float) -> str | None:
        """A raw level seen at ``now`` (bounce included)."""
        digit = self.tick(now)
        self._raw = breaking
        self._settle(self._debouncer.update(breaking, now), now)
        return digit

    def tick(self, now: float) -> str | None:
        """Let time pass to ``now``: a pending level settles, a gap ends a digit, a long break spoils it."""
        digit = None
        for _ in range(3):  # at most: a digit ends, a break settles, that break runs too long
            settles_at, expiry = self._debouncer.settles_at, self._expiry()
            if expiry is not None and expiry <= now and (settles_at is None or expiry <= settles_at):
                digit = self._expire() or digit
            elif settles_at is not None and settles_at <= now:
                # Settle at the moment it held long enough, not whenever we were called.
                self._settle(self._debouncer.update(self._raw, settles_at), settles_at)
            else:
                break
        return digit

    @property
    def deadline(self) -> float | None:
        """The next moment :meth:`tick` could change something, or None while idle."""
        times = [t for t in (self._debouncer.settles_at, self._expiry()) if t is not None]
        return min(times) if times else None

    def _expiry(self) -> float | None:
        if self._debouncer.state:
            return self._since + self._cfg.max_break_seconds if self._count else None
        return self._since + self._cfg.digit_gap_seconds if self._count else None

    def _settle(self, changed: bool | None, at: float) -> None:
        if changed is None:
            return
        if changed:  # a break begins: one more pulse
            self._count += 1
        self._since = at

    def _expire(self) -> str | None:
        count, self._count = self._count, 0
        if self._debouncer.state:
            _LOGGER.info("Dial: the line stayed broken past %.2f s; digit dropped", self._cfg.max_break_seconds)
            return None
        if count > MAX_PULSES:
            _LOGGER.info("Dial: %d pulses is no digit; dropped", count)
            return None
        return str(count % MAX_PULSES)


class GpioDial:
    """A rotary dial's pulse contact on a GPIO pin, read through gpiozero; digits go to a queue."""

    def __init__(self, cfg: RotaryConfig) -> None:
        """Open the pin now, so a wrong pin or a missing GPIO library fails at start-up."""
        self._cfg = cfg
        self._decoder = PulseDecoder(cfg)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._contact = GpioContact(cfg.pin, cfg.pull_up, cfg.pulse_when, "pi.dial.rotary.pin")
        except ValueError as err:
            raise DialError(str(err)) from err

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
        """Watch the pin; each dialed digit is put on ``queue`` as "0"-"9"."""
        if not self._contact.is_open:
            raise DialError("the dial was closed")
        self._loop, self._queue = loop, queue
        self._contact.watch(loop, self._check)
        _LOGGER.info("Rotary dial on GPIO%d (pulse when %s)", self._cfg.pin, self._cfg.pulse_when)

    def _check(self) -> None:
        if self._loop is None or not self._contact.is_open:
            return
        self._deliver(self._decoder.feed(self._contact.active(), self._loop.time()))

    def _tick(self) -> None:
        self._timer = None
        if self._loop is not None:
            self._deliver(self._decoder.tick(self._loop.time()))

    def _deliver(self, digit: str | None) -> None:
        """Queue a finished digit and wake up again when the decoder next needs time to pass."""
        if self._loop is None or self._queue is None:
            return
        if digit is not None:
            _LOGGER.debug("Dial: %s", digit)
            self._queue.put_nowait(digit)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._decoder.deadline
        if deadline is not None:
            # A hair past the deadline, so the tick is not a clock tick early.
            self._timer = self._loop.call_at(deadline + 0.001, self._tick)

    def close(self) -> None:
        """Release the pin; no digits after this."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._contact.close()
        self._loop = self._queue = None
