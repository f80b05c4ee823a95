"""The thinking filler: when a reply is late, the character says "Hmm, let me think." in its own voice.

The filler is the server's (``GET /characters/<id>/filler``), cached on the phone per character
and voice like the greeting, and kept in memory once loaded; it is never waited for: a filler not
yet on the phone is fetched in the background and plays from the next late reply on.

Never overlapping the reply: the reply waits for the filler to end. The filler is short (about a
second), and the reply's audio simply queues behind it in the same player (the same sample rate),
or, at another rate, starts when the filler has played. :class:`FillerSink` wraps the earpiece to
do this, so the reply's playback loop stays as it is: its ``start`` joins the utterance in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from common.config import FillerConfig
from pi_client.audio.playback import AudioSink, SinkWrapper
from pi_client.server.greetings import Greeting, GreetingCache

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

_BLOCK_SECONDS = 0.25
"""Filler audio handed to the player at a time, in seconds (a hang-up cuts between blocks)."""
_REFRESH_SECONDS = 300.0
"""A filler in memory is checked against the server again after this long (a new voice), in seconds."""


class FillerSink(SinkWrapper):
    """The earpiece, where a filler can play first and the next utterance waits behind it."""

    def __init__(self, inner: AudioSink) -> None:
        super().__init__(inner)
        self._writing: asyncio.Task[None] | None = None
        self._open_rate = 0
        """The rate of a filler utterance still open in the player (0: none)."""
        self.started = False
        """An utterance other than the filler was started since :meth:`reset`."""

    def reset(self) -> None:
        self.started = False

    def play_filler(self, pcm: bytes, sample_rate: int) -> None:
        """Start the filler now (written in the background; the next ``start`` waits for it)."""
        self._writing = asyncio.create_task(self._write_filler(pcm, sample_rate), name="filler")

    async def _write_filler(self, pcm: bytes, rate: int) -> None:
        await self._inner.start(rate)
        self._open_rate = rate
        block = max(2, int(rate * _BLOCK_SECONDS) * 2)
        for i in range(0, len(pcm), block):
            await self._inner.write(pcm[i : i + block])

    async def _filler_written(self) -> None:
        """Wait until the filler is all in the player (it plays on in order)."""
        task, self._writing = self._writing, None
        if task is not None:
            with contextlib.suppress(Exception):  # a player failing on the filler fails again on start
                await task

    async def start(self, sample_rate: int) -> None:
        self.started = True
        await self._filler_written()
        rate, self._open_rate = self._open_rate, 0
        if rate == sample_rate:
            return  # the reply queues behind the filler in the same player
        if rate:
            await self._inner.finish()  # another rate: the filler plays out first
        await self._inner.start(sample_rate)

    async def write(self, pcm: bytes) -> None:
        await self._inner.write(pcm)

    async def finish(self) -> None:
        await self._filler_written()
        self._open_rate = 0
        await self._inner.finish()

    async def kill(self) -> None:
        task, self._writing = self._writing, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._open_rate = 0
        await self._inner.kill()

    async def close(self) -> None:
        await self.kill()
        await self._inner.close()

    async def settle(self) -> None:
        """A filler nothing followed (the reply failed): let it play out and end its utterance."""
        if self._writing is not None or self._open_rate:
            await self.finish()


class ThinkingFiller:
    """Covers a late reply with the character's filler; holds the :class:`FillerSink` the phone plays through."""

    def __init__(self, cache: GreetingCache, cfg: FillerConfig, sink: AudioSink) -> None:
        self._cache = cache
        self._cfg = cfg
        self.sink = FillerSink(sink)
        self._loaded: dict[str | None, tuple[float, Greeting]] = {}
        self._loading: dict[str | None, asyncio.Task[None]] = {}

    async def cover(self, reply: Awaitable[T], character: str | None, since: float) -> T:
        """Await ``reply`` (which plays through :attr:`sink`); its first audio that late gets the filler first.

        ``character`` None is the server's default; ``since`` is when the caller stopped talking
        (monotonic), the start of the silence they hear.
        """
        self.sink.reset()
        self._refresh(character)
        timer = asyncio.create_task(self._after(since + self._cfg.after_seconds, character), name="filler-timer")
        try:
            result = await reply
        except asyncio.CancelledError:  # hung up: the hang-up's kill silences any filler
            timer.cancel()
            raise
        except Exception:  # the reply failed before its audio: a filler already playing ends cleanly
            timer.cancel()
            if not self.sink.started:
                await self.sink.settle()
            raise
        timer.cancel()
        await asyncio.gather(timer, return_exceptions=True)
        if not self.sink.started:
            await self.sink.settle()
        return result

    async def _after(self, at: float, character: str | None) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if self.sink.started:
            return
        loaded = self._loaded.get(character)
        ready = loaded[1] if loaded is not None else None
        if ready is None or ready.pcm is None:
            _LOGGER.info("reply late; no filler for %s on the phone yet", character or "the default character")
            return
        _LOGGER.info("reply late: the thinking filler of %s", character or "the default character")
        self.sink.play_filler(ready.pcm, ready.sample_rate)

    def _refresh(self, character: str | None) -> None:
        """(Re)load the filler in the background when it is missing from memory or old; never waited for."""
        loaded = self._loaded.get(character)
        stale = loaded is None or time.monotonic() - loaded[0] > _REFRESH_SECONDS
        if stale and character not in self._loading:
            task = asyncio.create_task(self._load(character), name="filler-load")
            self._loading[character] = task
            task.add_done_callback(lambda _t: self._loading.pop(character, None))

    async def _load(self, character: str | None) -> None:
        filler = await asyncio.to_thread(self._cache.fetch, character)
        if filler.pcm is not None:
            self._loaded[character] = (time.monotonic(), filler)
