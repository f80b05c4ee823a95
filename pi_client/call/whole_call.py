"""``--whole-call``: one call from a recording, the handset lifted at its first sample and put down after it.

The recording is the live microphone (:class:`~pi_client.audio.recorded_call.RecordedLine`),
shared through :class:`~pi_client.audio.microphone.CallMicrophone` with echo cancellation, so
every utterance is a turn, barge-ins and touch-tone digits included. The handset goes down once
the recording has been heard and the phone has nothing more to play; the earpiece file is
written on the call's clock, as long as the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.config import ConfigError, EchoConfig, replace
from pi_client.audio.capture import BLOCK_SAMPLES, SAMPLE_RATE
from pi_client.audio.microphone import CallMicrophone, echo_canceller
from pi_client.audio.recorded_call import RecordedLine
from pi_client.call.runner import Phone

_LOGGER = logging.getLogger(__name__)

MAX_CALL_AFTER_RECORDING_SECONDS = 120.0
"""Call time after the recording's end the phone may still talk before the handset goes down anyway."""
_STOP_WAIT_SECONDS = 10.0
"""Bound on the phone unwinding after the handset is down, in seconds."""


def recorded_call(
    path: str, echo_db: float | None, speed: float, echo: EchoConfig
) -> tuple[RecordedLine, CallMicrophone]:
    """The recorded line (microphone, clock, earpiece) and the call's shared microphone on it.

    The echo is cancelled only when ``echo_db`` makes one: AEC3 that has learned no echo path
    dulls a clean voice (docs/DESIGN-NOTES.md).
    """
    try:
        line = RecordedLine.from_wav(path, echo_db, speed)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--input-wav: {err}") from err
    canceller = echo_canceller(echo if echo_db is not None else replace(echo, cancel=False))
    return line, CallMicrophone(line, canceller, line.reference)


class RecordedHook:
    """The hook of a recorded call: lifted at once, put down when the recording is over and the phone idle."""

    def __init__(self, line: RecordedLine, phone: Phone, hang_up_when: Callable[[], bool] | None = None) -> None:
        """``hang_up_when`` replaces the rule (tests hang up in the middle of things)."""
        self._line = line
        self._phone = phone
        self._done = hang_up_when or (lambda: line.recording_done and phone.idle)
        self._watch: asyncio.Task[None] | None = None
        self.down = asyncio.Event()

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        from pi_client.telephone.hook import HookEvent

        queue.put_nowait(HookEvent.LIFTED)
        self._watch = loop.create_task(self._put_down_when_done(queue), name="recorded-hook")

    async def _put_down_when_done(self, queue: asyncio.Queue[Any]) -> None:
        from pi_client.telephone.hook import HookEvent

        line = self._line
        latest = line.recording_samples + round(MAX_CALL_AFTER_RECORDING_SECONDS * SAMPLE_RATE)
        while not self._done():
            if line.now >= latest:
                _LOGGER.warning("busy %.0fs past the recording: hanging up", MAX_CALL_AFTER_RECORDING_SECONDS)
                break
            await line.wait_until(line.now + BLOCK_SAMPLES)
        _LOGGER.info("handset put down at %.2fs of the call", line.now / SAMPLE_RATE)
        line.close()  # the call's clock stops here: the earpiece file ends with it
        queue.put_nowait(HookEvent.PUT_DOWN)
        self.down.set()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()


async def run_whole_call(
    phone: Phone,
    line: RecordedLine,
    microphone: CallMicrophone,
    earpiece: str | Path,
    hang_up_when: Callable[[], bool] | None = None,
) -> None:
    """Run the call to its end, then write ``earpiece`` (16 kHz, aligned with the recording)."""
    hook = RecordedHook(line, phone, hang_up_when)
    calls = asyncio.create_task(phone.run(hook), name="call")
    microphone.start()  # the clock starts with the handset lifted
    try:
        down = asyncio.create_task(hook.down.wait())
        await asyncio.wait({down, calls}, return_when=asyncio.FIRST_COMPLETED)
        down.cancel()
        if calls.done():
            calls.result()  # the phone crashed: say why
        deadline = asyncio.get_running_loop().time() + _STOP_WAIT_SECONDS
        while phone.state.value != "on-hook" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
    finally:
        calls.cancel()
        await asyncio.wait({calls}, timeout=_STOP_WAIT_SECONDS)
        line.close()
        await microphone.close()
        line.save_earpiece(earpiece)
