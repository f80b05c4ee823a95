"""Background health checks: knows whether the server is up, so a call does not wait on a dead line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from common.config import ClientConfig

_LOGGER = logging.getLogger(__name__)

_FIRST_RETRY_SECONDS = 1.0
"""First wait after a failed check; it doubles up to health_backoff_max_seconds."""


def next_check_delay(up: bool | None, failures: int, interval: float, backoff_max: float) -> float:
    """Seconds until the next check: the interval while up, exponential backoff while down."""
    if up or failures <= 0:
        return interval
    return min(backoff_max, _FIRST_RETRY_SECONDS * 2 ** (failures - 1))


def queue_load(payload: dict[str, Any]) -> float | None:
    """Share of reply slots in use from a /health answer (None without the key's details)."""
    queue = payload.get("queue")
    if not isinstance(queue, dict):
        return None
    active, capacity = queue.get("active"), queue.get("capacity")
    if not isinstance(active, int) or not isinstance(capacity, int) or capacity <= 0:
        return None
    return active / capacity


class HealthMonitor:
    """Checks ``/health`` periodically; ``up`` is None until the first answer, then True/False."""

    def __init__(self, check: Callable[[], dict[str, Any]], cfg: ClientConfig) -> None:
        self._check = check
        self._cfg = cfg
        self.up: bool | None = None
        self.status: str | None = None
        """The server's own status word ("ok" or "degraded") from the last good check."""
        self.load: float | None = None
        """Share of the server's reply slots in use (``queue`` of /health, shown to the key holder)."""
        self._failures = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start checking in the background (one named task)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name="health")

    async def close(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Check now (the handset was lifted: the answer is needed within seconds); any thread may call it."""
        loop = self._loop
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # a worker thread (the fleet reports from the reply reader)
            same_loop = False
        if loop is None or same_loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody checks any more
                loop.call_soon_threadsafe(self._wake.set)

    def report(self, ok: bool, reason: str = "") -> None:
        """Record what a real request just learned about the server."""
        if ok:
            if self.up is not True:
                _LOGGER.info("server is up")
            self.up, self._failures = True, 0
        else:
            if self.up is not False:
                _LOGGER.warning("server is down: %s", reason or "no answer")
            self.up = False
            self._failures += 1
            self.poke()  # start the backoff schedule from a fresh check

    async def check_once(self) -> bool:
        """One health check in a worker thread; updates ``up``."""
        try:
            payload = await asyncio.to_thread(self._check)
        except Exception as err:  # any failure to answer means down; the reason goes to the log
            self.report(False, str(err))
            return False
        self.status = str(payload.get("status", "")) or None
        self.load = queue_load(payload)
        if self.status == "degraded" and self.up is not True:
            _LOGGER.info("server answers but is degraded: %s", payload)
        self.report(True)
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # supervise the loop edge: log, back off, continue
                _LOGGER.exception("health check crashed")
            delay = next_check_delay(
                self.up, self._failures, self._cfg.health_interval_seconds, self._cfg.health_backoff_max_seconds
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)


class FleetHealth:
    """The health monitors of several servers seen as one: up while any server may answer."""

    def __init__(self, monitors: list[HealthMonitor]) -> None:
        self.monitors = monitors

    @property
    def up(self) -> bool | None:
        """True when a server answered its last check, False when all are down, else None."""
        states = [m.up for m in self.monitors]
        if True in states:
            return True
        return False if states and all(s is False for s in states) else None

    def start(self) -> None:
        """Start every monitor's background checks."""
        for monitor in self.monitors:
            monitor.start()

    async def close(self) -> None:
        """Stop every monitor."""
        for monitor in self.monitors:
            await monitor.close()

    def poke(self) -> None:
        """Check every server now."""
        for monitor in self.monitors:
            monitor.poke()

    def report(self, ok: bool, reason: str = "") -> None:
        """A whole turn failed: each server was already reported by the fleet; check them all again."""
        if not ok:
            self.poke()
