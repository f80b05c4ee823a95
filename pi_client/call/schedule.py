"""Scheduled calls (``pi.ring.scheduled``): at a time of day the phone asks the server to call it.

The call then comes like any other (the ringer's long-poll, the bell), so a wake-up call and a call
placed with ``POST /calls`` are the same thing. Times are local wall-clock ("07:30", every day); a
time passed while the phone was off is skipped, not made up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence

from common.config import RingConfig, ScheduledCallConfig
from pi_client.server.client import ServerClient, ServerError
from pi_client.server.ring_poll import TIME_OF_DAY, place_call

_LOGGER = logging.getLogger(__name__)
_CHECK_SECONDS = 30.0
"""Longest sleep between looks at the clock, in seconds (a clock set or a suspend is noticed soon)."""


def next_time(at: str, now: dt.datetime) -> dt.datetime:
    """The first ``at`` ("HH:MM") strictly after ``now`` (both local, naive)."""
    match = TIME_OF_DAY.fullmatch(at)
    if match is None:
        raise ValueError(f"expected HH:MM, got {at!r}")
    when = now.replace(hour=int(match[1]), minute=int(match[2]), second=0, microsecond=0)
    return when if when > now else when + dt.timedelta(days=1)


class Scheduler:
    """Places each scheduled call at its time, on the first server that takes it."""

    def __init__(
        self,
        lines: Sequence[ServerClient],
        ring: RingConfig,
        now: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        self._lines = tuple(lines)
        self._ring = ring
        self._now = now

    async def run(self) -> None:
        """Until cancelled."""
        start = self._now()
        due = [next_time(entry.at, start) for entry in self._ring.scheduled]
        while due:
            now = self._now()
            for i, entry in enumerate(self._ring.scheduled):
                if due[i] <= now:
                    await self._place(entry)
                    due[i] = next_time(entry.at, now)
            wait = (min(due) - self._now()).total_seconds()
            await asyncio.sleep(min(_CHECK_SECONDS, max(0.0, wait)))

    async def _place(self, entry: ScheduledCallConfig) -> None:
        for line in self._lines:
            try:
                call_id = await asyncio.to_thread(place_call, line, self._ring.phone_id, entry.character, entry.reason)
            except ServerError as err:
                _LOGGER.warning("scheduled call at %s not placed on %s: %s", entry.at, line.base_url, err)
                continue
            who = entry.character or "the default character"
            _LOGGER.info("scheduled call at %s placed: call %s from %s", entry.at, call_id, who)
            return
        _LOGGER.error("scheduled call at %s: no server took it; it is skipped today", entry.at)
