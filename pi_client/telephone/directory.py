"""The phone's directory: which character a dialed number reaches, and when a number is complete.

``pi.directory`` maps numbers (strings of digits) to character ids. A number is complete when
it matches an entry and no longer entry begins with it, when no digit came for the digit
timeout, or when the caller presses ``#``. :class:`NumberCollector` is pure and clock-free:
feed it digits with timestamps and tick it at :attr:`~NumberCollector.deadline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.config import ConfigError

END_KEY = "#"
"""Pressing this completes the number at once."""
DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class Dialed:
    """A completed number and who it reaches; ``character`` is None for a number not in service."""

    number: str
    character: str | None

    @property
    def known(self) -> bool:
        return self.character is not None


KEYS = frozenset("0123456789*#ABCD")
"""Every key a telephone can dial (A-D: the fourth column of some touch-tone keypads)."""


def check_end_key(key: str) -> None:
    """ConfigError naming ``pi.dial.end_call_key`` unless it is one key (or empty: none)."""
    if key and (len(key) != 1 or key not in KEYS):
        raise ConfigError(f"pi.dial.end_call_key: expected one key (0-9, *, #, A-D) or empty, got {key!r}")


class Directory:
    """Numbers → character ids, checked for shape (the Pi does not know the server's characters)."""

    def __init__(self, entries: Mapping[str, str]) -> None:
        for number, character in entries.items():
            if not number or not set(number) <= DIGITS:
                raise ConfigError(f"pi.directory: {number!r} is not a number (digits only; quote it in YAML)")
            if not isinstance(character, str) or not character.strip():
                raise ConfigError(f"pi.directory.{number}: expected a character id, got {character!r}")
        self._entries = dict(entries)

    def __bool__(self) -> bool:
        """An empty directory means no dialing: the handset goes straight to the default character."""
        return bool(self._entries)

    def lookup(self, number: str) -> Dialed:
        return Dialed(number, self._entries.get(number))

    def is_complete(self, number: str) -> bool:
        """It matches an entry and no longer entry begins with it."""
        return number in self._entries and not any(
            other != number and other.startswith(number) for other in self._entries
        )


class NumberCollector:
    """Collects digits into a number and says when it is complete; times are seconds on any clock."""

    def __init__(self, directory: Directory, digit_timeout_seconds: float) -> None:
        self._directory = directory
        self._timeout = digit_timeout_seconds
        self._number = ""
        self._last = 0.0

    @property
    def number(self) -> str:
        """The digits dialed so far."""
        return self._number

    @property
    def deadline(self) -> float | None:
        """When the number so far completes by timeout, or None before the first digit."""
        return self._last + self._timeout if self._number else None

    def key(self, key: str, now: float) -> Dialed | None:
        """A digit or ``#`` pressed (or dialed) at ``now``; other keys (``*``, A-D) are ignored here."""
        timed_out = self.tick(now)
        if timed_out is not None:
            return timed_out  # the number had completed before this key: the call is placed, the key is late
        if key == END_KEY:
            return self._complete() if self._number else None
        if key not in DIGITS:
            return None
        self._number += key
        self._last = now
        return self._complete() if self._directory.is_complete(self._number) else None

    def tick(self, now: float) -> Dialed | None:
        """Let time pass to ``now``: the digit timeout completes the number."""
        deadline = self.deadline
        return self._complete() if deadline is not None and now >= deadline else None

    def _complete(self) -> Dialed:
        number, self._number = self._number, ""
        return self._directory.lookup(number)
