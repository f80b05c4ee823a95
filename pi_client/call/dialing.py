"""The telephone side of a call: tones into the earpiece, and keys (rotary or touch-tone) into numbers.

:func:`play_tone` feeds a call-progress tone to the sink in real time, so cutting it (the first
digit, the greeting ready, hang-up) silences it at once. :class:`KeyPad` collects keys from the
rotary dial and from DTMF decoded in the handset audio into numbers, and tells the call when
the first digit is dialed and when a number is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from common.config import TonesConfig
from pi_client.audio.playback import AudioSink
from pi_client.call.machine import DigitDialed, EndKey, Event, NumberDialed
from pi_client.telephone.directory import Directory, NumberCollector
from pi_client.telephone.tones import PLANS, ToneGenerator, ToneName

_LOGGER = logging.getLogger(__name__)

TONE_RATE = 16000
"""Sample rate the tones are made at, in Hz."""
_BLOCK_SECONDS = 0.05
"""Tone audio handed to the sink at a time, in seconds."""
_LEAD_SECONDS = 0.1
"""How far the tone is written ahead of real time: enough to never starve, little enough to cut at once."""
RINGS_AT_MOST = 2
"""Ringback cycles the caller waits for the greeting before the phone's own voice greets instead."""
_STOP_WAIT_SECONDS = 5.0
"""Bound on a cancelled tone unwinding, in seconds."""

T = TypeVar("T")


async def play_tone(sink: AudioSink, tones: TonesConfig, name: ToneName, seconds: float | None) -> None:
    """Play ``name`` of the configured plan for ``seconds`` (None: until cancelled), paced in real time.

    A cancelled tone leaves the sink started: the caller kills it, which cuts what aplay still holds.
    """
    generator = ToneGenerator(PLANS[tones.plan][name], TONE_RATE, tones.level_dbfs)
    total = None if seconds is None else round(seconds * TONE_RATE)
    block = round(_BLOCK_SECONDS * TONE_RATE)
    loop = asyncio.get_running_loop()
    await sink.start(TONE_RATE)
    started, written = loop.time(), 0
    while not generator.finished and (total is None or written < total):
        pcm = generator.read(block if total is None else min(block, total - written))
        if not pcm:
            break
        await sink.write(pcm)
        written += len(pcm) // 2
        ahead = started + written / TONE_RATE - loop.time() - _LEAD_SECONDS
        if ahead > 0:
            await asyncio.sleep(ahead)
    await sink.finish()


async def ring_until(sink: AudioSink, tones: TonesConfig, ready: Awaitable[T]) -> T | None:
    """Ringback until ``ready`` gives its result, a ring or two at most (None when it took longer).

    The ring is cut the moment the result is there: the sink is killed, so aplay drops what it holds.
    """
    ringback = asyncio.create_task(play_tone(sink, tones, "ringback", None), name="ringback")
    wait = RINGS_AT_MOST * PLANS[tones.plan]["ringback"].cycle_seconds
    try:
        return await asyncio.wait_for(ready, wait)
    except TimeoutError:
        _LOGGER.warning("no answer after %.0f s of ringing", wait)
        return None
    finally:
        ringback.cancel()
        await asyncio.wait({ringback}, timeout=_STOP_WAIT_SECONDS)
        await sink.kill()


class DialSource(Protocol):
    """A rotary dial (pi_client.telephone.rotary.GpioDial): puts digits on a queue."""

    def start(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None: ...

    def close(self) -> None: ...


class KeyAudio(Protocol):
    """The handset microphone as frames of 16 kHz PCM16 (pi_client.audio.capture.AudioSource)."""

    def frames(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class KeyPad:
    """Keys in, :class:`DigitDialed` and :class:`NumberDialed` events out (through ``emit``), while dialing."""

    def __init__(
        self,
        directory: Directory,
        digit_timeout_seconds: float,
        emit: Callable[[Event], None],
        key_audio: Callable[[], KeyAudio] | None = None,
    ) -> None:
        self._directory = directory
        self._timeout = digit_timeout_seconds
        self._emit = emit
        self._key_audio = key_audio
        self._collector: NumberCollector | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._listening: asyncio.Task[None] | None = None
        self._end_key: str | None = None
        self._last_key: str | None = None

    @property
    def open(self) -> bool:
        """True between :meth:`begin` and :meth:`end`."""
        return self._collector is not None

    def begin(self, touch_tones: bool, end_key: str | None = None) -> None:
        """Take keys for a new number; with ``touch_tones``, also listen for them in the microphone.

        ``end_key`` (during a call): that key, dialed first, ends the call instead of starting a number.
        """
        self.end()
        self._collector = NumberCollector(self._directory, self._timeout)
        self._end_key = end_key
        if touch_tones:
            self.listen_for_touch_tones()

    def listen_for_touch_tones(self) -> None:
        """Decode keys from the microphone from now on (it is free: the dial tone, or a number begun mid-call).

        The key that was just pressed may still be sounding: it is not taken again.
        """
        if self._key_audio is not None and self._listening is None and self._collector is not None:
            task = self._decode_touch_tones(self._key_audio, self._last_key)
            self._listening = asyncio.create_task(task, name="dtmf")

    def end(self) -> None:
        """The number is dialed, or the handset is down: no more keys."""
        self._collector, self._end_key, self._last_key = None, None, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None

    def key(self, key: str) -> None:
        """A key from the dial or the keypad; ignored unless a number is being dialed."""
        collector = self._collector
        if collector is None:
            _LOGGER.debug("key %s outside dialing: ignored", key)
            return
        first = not collector.number
        self._last_key = key
        if first and key == self._end_key:
            _LOGGER.info("dialed %s: the caller ends the call", key)
            self.end()
            self._emit(EndKey())
            return
        if not self._directory:
            _LOGGER.debug("key %s: no directory to dial", key)
            return
        dialed = collector.key(key, asyncio.get_running_loop().time())
        _LOGGER.info("dialed %s", key)
        if first and (collector.number or dialed is not None):  # a one-digit number is complete at once
            self._emit(DigitDialed())
        self._settle(dialed)

    def _tick(self) -> None:
        self._timer = None
        if self._collector is not None:
            self._settle(self._collector.tick(asyncio.get_running_loop().time()))

    def _settle(self, dialed: Any) -> None:
        if dialed is not None:
            _LOGGER.info("number %s: %s", dialed.number, dialed.character or "not in service")
            self.end()
            self._emit(NumberDialed(dialed.number, dialed.character))
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._collector.deadline if self._collector is not None else None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline + 0.001, self._tick)

    async def _decode_touch_tones(self, open_audio: Callable[[], KeyAudio], sounding: str | None) -> None:
        from pi_client.telephone.dtmf import DtmfDecoder

        decoder = DtmfDecoder()
        if sounding is not None:
            decoder.hold(sounding)
        source = open_audio()
        try:
            async for frame in source.frames():
                for key in await asyncio.to_thread(decoder.feed, frame):
                    self.key(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # a microphone failing while dialing: the rotary dial and the timeout still work
            _LOGGER.exception("touch-tone listening failed")
        finally:
            with contextlib.suppress(Exception):
                source.close()
