"""The hook switch: handset lifted or put down, as events on an asyncio queue.

Real cradles bounce for a few milliseconds, and gpiozero's mock pin factory ignores
``bounce_time``, so debouncing is our own code (:class:`Debouncer`), pure and clock-free.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
import threading
from abc import ABC, abstractmethod
from typing import TextIO

from common.config import HookConfig
from pi_client.telephone.contact import GpioContact

_LOGGER = logging.getLogger(__name__)


class HookError(RuntimeError):
    """The hook switch cannot be opened; the message names the setting."""


class HookEvent(enum.Enum):
    """What the caller did with the handset."""

    LIFTED = "lifted"
    PUT_DOWN = "put_down"


class Debouncer:
    """Reports a level change only once the new level has held for ``debounce_seconds``."""

    def __init__(self, debounce_seconds: float, initial: bool = False) -> None:
        self.debounce_seconds = debounce_seconds
        self.state = initial
        self._candidate: bool | None = None
        self._since = 0.0

    def update(self, level: bool, now: float) -> bool | None:
        """Feed the level seen at time ``now`` (seconds); return the new stable state, else None."""
        if level == self.state:
            self._candidate = None
            return None
        if level != self._candidate:
            self._candidate, self._since = level, now
        if now >= self._since + self.debounce_seconds:  # the same sum as settles_at (float rounding)
            self.state, self._candidate = level, None
            return level
        return None

    @property
    def pending(self) -> bool:
        """A different level was seen and has not yet held long enough."""
        return self._candidate is not None

    @property
    def settles_at(self) -> float | None:
        """When the pending level will have held long enough (if it stays), else None."""
        return None if self._candidate is None else self._since + self.debounce_seconds


def _event(lifted: bool) -> HookEvent:
    return HookEvent.LIFTED if lifted else HookEvent.PUT_DOWN


class Hook(ABC):
    """A source of hook events; the handset counts as put down until told otherwise."""

    @abstractmethod
    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[HookEvent]) -> None:
        """Begin delivering events to ``queue`` on ``loop``."""

    @abstractmethod
    def close(self) -> None:
        """Stop delivering events and release the hardware."""


class GpioHook(Hook):
    """A hook switch on a GPIO pin, read through gpiozero and debounced here."""

    def __init__(self, cfg: HookConfig) -> None:
        """Open the pin now, so a wrong pin or a missing GPIO library fails at start-up."""
        self._cfg = cfg
        self._debouncer = Debouncer(cfg.debounce_seconds, initial=False)
        self._queue: asyncio.Queue[HookEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._contact = GpioContact(cfg.pin, cfg.pull_up, cfg.lifted_when, "pi.hook.pin")
        except ValueError as err:
            raise HookError(str(err)) from err

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[HookEvent]) -> None:
        """Watch the pin; a handset already lifted at start is reported as LIFTED."""
        if not self._contact.is_open:
            raise HookError("the hook switch was closed")
        self._loop, self._queue = loop, queue
        self._contact.watch(loop, self._check)
        _LOGGER.info("Hook switch on GPIO%d (lifted when %s)", self._cfg.pin, self._cfg.lifted_when)
        loop.call_soon_threadsafe(self._check)

    def _check(self) -> None:
        """On the loop: feed the current level to the debouncer, re-check once it could settle."""
        if self._loop is None or self._queue is None or not self._contact.is_open:
            return
        changed = self._debouncer.update(self._contact.active(), self._loop.time())
        if changed is not None:
            _LOGGER.debug("Hook: %s", _event(changed).value)
            self._queue.put_nowait(_event(changed))
        if self._debouncer.pending and self._timer is None:
            # A hair past the debounce time, so the re-check is not a clock tick early.
            self._timer = self._loop.call_later(self._cfg.debounce_seconds + 0.001, self._recheck)

    def _recheck(self) -> None:
        self._timer = None
        self._check()

    def close(self) -> None:
        """Release the pin; no events after this."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._contact.close()
        self._loop = self._queue = None


class KeyboardHook(Hook):
    """Enter lifts the handset, Enter again puts it down: for a desk without GPIO."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self._lifted = False
        self._closed = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[HookEvent] | None = None

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[HookEvent]) -> None:
        """Read lines in a daemon thread (a blocked stdin read cannot be cancelled)."""
        self._loop, self._queue = loop, queue
        threading.Thread(target=self._read, name="keyboard-hook", daemon=True).start()
        _LOGGER.info("Keyboard hook: press Enter to lift the handset, Enter again to hang up")

    def _read(self) -> None:
        for _line in self._stream:
            if self._closed.is_set():
                return
            loop = self._loop
            if loop is None:
                return
            try:
                loop.call_soon_threadsafe(self._toggle)
            except RuntimeError:  # the loop closed: the phone is shutting down
                return
        _LOGGER.debug("Keyboard hook: end of input")

    def _toggle(self) -> None:
        if self._queue is None or self._closed.is_set():
            return
        self._lifted = not self._lifted
        self._queue.put_nowait(_event(self._lifted))

    def close(self) -> None:
        """Stop delivering events (the reader thread ends at its next line or EOF)."""
        self._closed.set()
        self._queue = None
