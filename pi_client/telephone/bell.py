"""The bell: a GPIO output that drives a relay (switching a ring generator or a real bell) or a buzzer.

The ringer decides when it sounds (the cadence); the bell only switches. Without a pin the bell is
silent and each ring is logged, so a desk setup (keyboard hook) still shows a call coming in.
"""

from __future__ import annotations

import logging

_LOGGER = logging.getLogger(__name__)


class BellError(RuntimeError):
    """The bell's pin cannot be opened; the message names the setting."""


class Bell:
    """On and off; off when closed."""

    def __init__(self, pin: int | None, active_high: bool = True) -> None:
        """Open the pin now, so a wrong pin or a missing GPIO library fails at start-up."""
        self.pin = pin
        self._device = None
        self._sounding = False
        if pin is None:
            return
        from gpiozero import DigitalOutputDevice

        try:
            self._device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False)
        except Exception as err:  # gpiozero raises its own family per pin factory
            raise BellError(f"pi.ring.bell_pin: cannot open GPIO{pin}: {err}") from err

    def sound(self, on: bool) -> None:
        """Ring (True) or fall silent (False)."""
        if on == self._sounding:
            return
        self._sounding = on
        if self._device is not None:
            self._device.value = on
        elif on:
            _LOGGER.info("RING (no bell wired: pi.ring.bell_pin is not set)")

    def close(self) -> None:
        """Silence and release the pin."""
        self.sound(False)
        if self._device is not None:
            self._device.close()
            self._device = None
