"""One microphone for the whole call, shared by everyone who listens, with the earpiece's echo removed once.

A phone that can be interrupted listens while it plays: the turn listener, the barge-in watch and
the touch-tone decoder all hear the same handset. :class:`CallMicrophone` reads its source
continuously, cancels the echo of what the earpiece played (the reference), and hands every
frame to each :meth:`~CallMicrophone.tap` opened since; a tap is an ordinary
:class:`~pi_client.audio.capture.AudioSource`, so listening code does not know it is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from common.config import AudioConfig, ConfigError, EchoConfig
from pi_client.audio.capture import BLOCK_SAMPLES, SAMPLE_RATE, AudioSource
from pi_client.audio.echo import EchoCanceller, EchoCancellerError

_LOGGER = logging.getLogger(__name__)

_TAP_FRAMES = 160
"""Frames a tap holds for a slow reader (about 5 s) before the oldest are dropped."""

Reference = Callable[[int, int], bytes]
"""``reference(first_sample, count)``: the PCM16 the earpiece played over those microphone samples."""


class MicTap(AudioSource):
    """The shared microphone from the moment the tap was opened until it is closed."""

    def __init__(self, owner: CallMicrophone) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(maxsize=_TAP_FRAMES)
        self.dropped = 0

    def put(self, frame: bytes | Exception | None) -> None:
        """A frame from the microphone (None: it ended; an error: it failed); the oldest goes when the reader lags."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(frame)

    async def frames(self) -> AsyncIterator[bytes]:
        """Frames as they are heard; ends when the tap is closed or the microphone ends."""
        while (frame := await self._queue.get()) is not None:
            if isinstance(frame, Exception):
                raise frame
            yield frame

    def close(self) -> None:
        """Stop receiving; a reader waiting for a frame gets the end."""
        self._owner.untap(self)
        self.put(None)


class CallMicrophone:
    """Reads ``source`` in its own task and fans the frames (echo cancelled when set up) out to taps."""

    def __init__(
        self,
        source: AudioSource,
        canceller: EchoCanceller | None = None,
        reference: Reference | None = None,
        idle_close_seconds: float | None = None,
    ) -> None:
        """``idle_close_seconds``: release the device once nobody has listened this long (on-hook);
        None keeps it running (a recorded call, whose clock must not stop)."""
        self._source = source
        self._idle_close_seconds = idle_close_seconds
        self._idle_timer: asyncio.TimerHandle | None = None
        self._canceller = canceller if reference is not None else None
        self._reference = reference
        self._taps: set[MicTap] = set()
        self._task: asyncio.Task[None] | None = None
        self.samples = 0
        """Samples heard so far (the microphone's own clock)."""
        self._started_at: float | None = None

    def start(self) -> None:
        """Begin reading the source (idempotent; again after it failed)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pump(), name="microphone")

    def sample_time(self, sample: int) -> float:
        """Monotonic time at which ``sample`` was heard (the live echo reference is found by time)."""
        return (self._started_at or time.monotonic()) + sample / SAMPLE_RATE

    def tap(self) -> MicTap:
        """A new listener, hearing from now on."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self.start()
        tap = MicTap(self)
        self._taps.add(tap)
        return tap

    def untap(self, tap: MicTap) -> None:
        """Forget a listener (its close does this); the last one gone starts the idle countdown."""
        self._taps.discard(tap)
        if not self._taps and self._idle_close_seconds is not None and self._idle_timer is None:
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_later(self._idle_close_seconds, self._close_idle)

    def _close_idle(self) -> None:
        self._idle_timer = None
        task, self._task = self._task, None
        if task is not None and not self._taps:
            _LOGGER.debug("microphone idle: released")
            self._source.close()
            task.cancel()

    async def _pump(self) -> None:
        frames = self._source.frames()
        self.samples, self._started_at = 0, None
        ended: Exception | None = None
        try:
            async for frame in frames:
                if self._started_at is None:
                    self._started_at = time.monotonic() - len(frame) / 2 / SAMPLE_RATE
                if self._canceller is not None and self._reference is not None:
                    played = self._reference(self.samples, len(frame) // 2)
                    frame = self._canceller.process(frame, played)  # well under a millisecond per frame
                self.samples += len(frame) // 2 or BLOCK_SAMPLES
                for tap in list(self._taps):
                    tap.put(frame)
        except Exception as err:  # the device failed: listeners hear why, the next tap opens it again
            ended = err
        finally:
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            for tap in list(self._taps):
                tap.put(ended)

    def release(self) -> None:
        """Hang-up: let go of the device at once (open taps end); the next tap opens it again."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        task, self._task = self._task, None
        self._source.close()
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop reading and release the source; open taps end."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._source.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})


def echo_canceller(cfg: EchoConfig) -> EchoCanceller | None:
    """The canceller ``pi.turns.echo`` asks for (None when off); a ConfigError naming the key if it cannot run."""
    if not cfg.cancel:
        return None
    try:
        return EchoCanceller(delay_ms=cfg.delay_ms)
    except EchoCancellerError as err:
        raise ConfigError(f"pi.turns.echo.cancel: {err}") from err


def live_microphone(audio: AudioConfig, echo: EchoConfig, aplay: Any) -> CallMicrophone:
    """The handset microphone, shared by the call and released on hang-up, the echo of what ``aplay``
    (an AplaySink) was given cancelled: both are placed on the monotonic clock."""
    from pi_client.audio.capture import SoundDeviceSource

    microphone: CallMicrophone | None = None

    def played(first: int, count: int) -> bytes:
        assert microphone is not None
        return bytes(aplay.history.segment(microphone.sample_time(first), count))

    microphone = CallMicrophone(SoundDeviceSource(audio), echo_canceller(echo), played, idle_close_seconds=0.0)
    return microphone
