"""A switch contact on a GPIO pin (the hook switch, the dial's pulse contact), read through gpiozero.

gpiozero calls back on its own thread (or, with the mock pin factory, on the caller's): the
contact only hands each edge to the event loop, where the caller debounces and decides.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Literal


class GpioContact:
    """One contact: ``active()`` is True when it is in its ``active_when`` position."""

    def __init__(self, pin: int, pull_up: bool, active_when: Literal["open", "closed"], setting: str) -> None:
        """Open the pin now: a wrong pin or no GPIO library fails at start-up (ValueError names ``setting``)."""
        from gpiozero import Button

        self.pin = pin
        self._active_when = active_when
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            # bounce_time=None: debouncing is the caller's (gpiozero's mock ignores it; real contacts bounce).
            self._button: Button | None = Button(pin, pull_up=pull_up, bounce_time=None)
        except Exception as err:  # gpiozero raises its own family per pin factory (BadPinFactory, PinInvalidPin, ...)
            raise ValueError(f"{setting}: cannot open GPIO{pin}: {err}") from err

    @property
    def is_open(self) -> bool:
        """False once closed: no more edges."""
        return self._button is not None

    def watch(self, loop: asyncio.AbstractEventLoop, on_edge: Callable[[], None]) -> None:
        """Call ``on_edge`` on ``loop`` after every change of level."""
        if self._button is None:
            raise ValueError(f"GPIO{self.pin} was closed")
        self._loop = loop

        def hand_off() -> None:
            loop_now = self._loop
            if loop_now is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed under us: the phone is shutting down
                    loop_now.call_soon_threadsafe(on_edge)

        self._button.when_pressed = hand_off
        self._button.when_released = hand_off

    def active(self) -> bool:
        """The contact is in its active position now (False once closed)."""
        if self._button is None:
            return False
        closed = bool(self._button.is_pressed)  # gpiozero folds pull_up in: pressed == contact closed
        return closed if self._active_when == "closed" else not closed

    def close(self) -> None:
        """Release the pin."""
        self._loop = None
        if self._button is not None:
            self._button.close()
            self._button = None
