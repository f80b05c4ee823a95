"""The ringer: while the handset is down, ask the servers for calls placed to this phone and ring the bell.

One long-poll per server (``GET /calls/next``, in a daemon thread: a poll cannot be cancelled, and
must not hold up shutdown). A call that arrives rings ``pi.ring.cadence`` up to ``pi.ring.rings``
times; lifting the handset meanwhile answers it (:meth:`Ringer.lifted` hands it to the call), ringing
out tells the server it was ``missed``, a call cancelled on the server stops at the next ring, and one
that arrives while the handset is up is handed back (``busy``) to ring once it is down again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from common.config import RingConfig
from pi_client.server.client import ServerClient, ServerError
from pi_client.server.ring_poll import IncomingCall, call_status, next_call, report
from pi_client.telephone.bell import Bell

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


async def in_daemon_thread(work: Callable[[], T]) -> T:
    """``work()`` in a daemon thread: awaiting it can be cancelled, and a blocked read never delays exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as err:  # handed to the awaiting task, whatever it is
            result, error = None, err
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="ring-http", daemon=True).start()
    return await done


@dataclass
class _Ringing:
    call: IncomingCall
    answered: asyncio.Event = field(default_factory=asyncio.Event)


class Ringer:
    """Calls from the servers in, the bell out; the hook tells it when the handset is up or down."""

    def __init__(self, lines: Sequence[ServerClient], cfg: RingConfig, bell: Bell) -> None:
        self._lines = tuple(lines)
        self._cfg = cfg
        self._bell = bell
        self._on_hook = asyncio.Event()
        self._on_hook.set()
        self._ringing: _Ringing | None = None
        self._one_at_a_time = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Begin asking every server for calls (on the running loop)."""
        self._tasks = [asyncio.create_task(self._poll(line), name="ring-poll") for line in self._lines]
        if self._cfg.scheduled:
            from pi_client.call.schedule import Scheduler

            self._tasks.append(asyncio.create_task(Scheduler(self._lines, self._cfg).run(), name="ring-schedule"))
        _LOGGER.info("Ringer: phone %s, bell %s", self._cfg.phone_id,
                     f"GPIO{self._bell.pin}" if self._bell.pin is not None else "none")

    async def close(self) -> None:
        """Stop asking and silence the bell."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._bell.close()

    def lifted(self) -> IncomingCall | None:
        """The handset is up: no more ringing; the call that was ringing, if any, is answered."""
        self._on_hook.clear()
        ringing, self._ringing = self._ringing, None
        if ringing is None:
            return None
        self._bell.sound(False)
        ringing.answered.set()
        _LOGGER.info("call %s answered: %s calls about %r", ringing.call.call_id, ringing.call.character,
                     ringing.call.reason)
        return ringing.call

    def put_down(self) -> None:
        """The handset is down: calls may ring again."""
        self._on_hook.set()

    async def _poll(self, line: ServerClient) -> None:
        phone, wait = self._cfg.phone_id, self._cfg.poll_wait_seconds
        failing = False
        while True:
            await self._on_hook.wait()
            try:
                call = await in_daemon_thread(lambda: next_call(line, phone, wait))
            except ServerError as err:
                if not failing:
                    _LOGGER.warning("cannot ask %s for calls (%s); again every %.0f s", line.base_url, err,
                                    self._cfg.retry_seconds)
                failing = True
                await asyncio.sleep(self._cfg.retry_seconds)
                continue
            failing = False
            if call is not None:
                await self._ring(call)

    async def _ring(self, call: IncomingCall) -> None:
        async with self._one_at_a_time:
            if not self._on_hook.is_set():
                _LOGGER.info("call %s from %s while the handset is up: busy", call.call_id, call.character)
                await self._report(call, "busy")
                return
            _LOGGER.info("call %s from %s: ringing", call.call_id, call.character)
            ringing = self._ringing = _Ringing(call)
            try:
                ending = await self._ring_out(ringing)
            finally:
                self._bell.sound(False)
                if self._ringing is ringing:
                    self._ringing = None
        if ending == "missed":
            _LOGGER.info("call %s missed after %d rings", call.call_id, self._cfg.rings)
            await self._report(call, "missed")

    async def _ring_out(self, ringing: _Ringing) -> str:
        """Ring the cadence until answered, cancelled on the server, or ``rings`` rings are done."""
        cadence = self._cfg.cadence or (2.0, 4.0)
        for ring in range(self._cfg.rings):
            for step, seconds in enumerate(cadence):
                if ringing.answered.is_set():  # lifted while the server was asked about the call
                    return "answered"
                self._bell.sound(step % 2 == 0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ringing.answered.wait(), seconds)
                    return "answered"
            if ring + 1 < self._cfg.rings and await self._cancelled(ringing.call):
                _LOGGER.info("call %s cancelled while ringing", ringing.call.call_id)
                return "cancelled"
        return "missed"

    async def _cancelled(self, call: IncomingCall) -> bool:
        try:
            return await in_daemon_thread(lambda: call_status(call)) == "cancelled"
        except ServerError:
            return False  # keep ringing: the server may be back by the next ring

    async def _report(self, call: IncomingCall, outcome: Literal["missed", "busy"]) -> None:
        try:
            await in_daemon_thread(lambda: report(call, outcome))
        except ServerError as err:  # the server marks it missed itself after server.calls.ring_timeout_seconds
            _LOGGER.warning("could not report call %s %s: %s", call.call_id, outcome, err)
