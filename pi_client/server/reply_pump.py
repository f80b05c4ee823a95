"""One streamed reply read in a worker thread and handed to the event loop piece by piece.

A ``to_thread`` read cannot be cancelled from outside, so the reader checks a ``threading.Event``
between chunks, and ``stop()`` also shuts the socket so a read blocked on a silent server wakes.
The hand-over holds at most ``reply_buffer_seconds`` of audio: past that the reader waits for the
player (and TCP makes the server wait too), so a reply faster than real time cannot fill memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pi_client.server.client import (
    ReplyRequest,
    ReplyStream,
    ServerClient,
    ServerError,
    ServerUnavailable,
    StreamBroken,
)

if TYPE_CHECKING:
    from pi_client.server.fleet import ServerFleet

_LOGGER = logging.getLogger(__name__)

_PLAYER_GONE_SECONDS = 60.0
"""The reader gives up when the player takes no audio for this long (it is stuck), in seconds."""
_ROOM_POLL_SECONDS = 0.5
"""How often a reader waiting for room re-checks the cancel event, in seconds."""


@dataclass(frozen=True)
class ReplyHead:
    """The reply's headers arrived: its session and (for /process-audio) what the server heard."""

    session_id: str | None
    transcript: str | None
    character: str | None = None
    """Who answered (the server's X-Character)."""


@dataclass(frozen=True)
class ReplyAudio:
    """One piece of the reply's PCM16 mono."""

    sample_rate: int
    pcm: bytes


@dataclass(frozen=True)
class ReplyEnd:
    """The reply stream ended normally."""

    call_ended: bool = False
    """The character hung up in this reply: the call ends once it has played."""


ReplyPiece = ReplyHead | ReplyAudio | ReplyEnd


class RateWatch:
    """Tells a trickle from a pause: over each window from the first audio, enough bytes must arrive.

    Clock-free: the caller passes the time. A silent stream is the read timeout's business; this
    catches a server that keeps sending a few bytes, so the read never times out and the caller
    hears nothing for ever.
    """

    def __init__(self, min_bytes_per_second: float, window_seconds: float) -> None:
        self._min = min_bytes_per_second
        self._window = window_seconds
        self._start: float | None = None
        self._bytes = 0

    def too_slow(self, now: float, nbytes: int) -> bool:
        """Count ``nbytes`` arriving at ``now``; True when the window just closed short of the minimum."""
        if self._start is None:
            self._start = now
        self._bytes += nbytes
        elapsed = now - self._start
        if elapsed < self._window:
            return False
        slow = self._bytes < self._min * elapsed
        self._start, self._bytes = now, 0
        return slow


class ReplyPump:
    """Reads one streamed reply in a worker thread and hands its pieces to the event loop.

    ``stop()`` sets the thread's cancel event and shuts the socket, so a hang-up frees the
    connection at once and the server sees the disconnect.
    """

    def __init__(self, client: ServerClient | ServerFleet, request: ReplyRequest) -> None:
        self._client = client
        self._request = request
        self._settings = client.settings
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[ReplyPiece | ServerError] = asyncio.Queue()
        self._cancel = threading.Event()
        self._stream: ReplyStream | None = None
        self._lock = threading.Lock()
        self._room = threading.Condition()
        self._queued = 0
        self.peak_queued_bytes = 0
        """Most audio ever waiting for the player at once, in bytes (what the bound holds down)."""
        self._rate = RateWatch(self._settings.min_bytes_per_second, self._settings.read_timeout_seconds)
        self.done = threading.Event()
        """Set when the worker thread has closed the response."""
        self._worker = threading.Thread(target=self._run, name="reply-http", daemon=True)
        self._worker.start()

    def _put(self, item: ReplyPiece | ServerError) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self) -> None:
        try:
            with self._client.open(self._request) as stream:
                with self._lock:
                    self._stream = stream
                if self._cancel.is_set():
                    return
                self._put(ReplyHead(stream.session_id, stream.transcript, stream.character))
                for pcm in stream.audio(self._cancel):
                    rate = stream.sample_rate or 0
                    if not self._wait_for_room(len(pcm), rate):
                        return
                    self._put(ReplyAudio(rate, pcm))
                self._put(ReplyEnd(stream.call_ended))
        except ServerError as err:
            self._put(err)
        except Exception as err:  # a bug must not leave the call waiting for a piece that never comes
            _LOGGER.exception("reply reader failed")
            self._put(ServerUnavailable(f"reply reader failed: {err}"))
        finally:
            self.done.set()

    def _wait_for_room(self, nbytes: int, sample_rate: int) -> bool:
        """Block the reader while the player is ``reply_buffer_seconds`` behind; False: stop reading."""
        limit = int(self._settings.reply_buffer_seconds * sample_rate) * 2
        deadline = time.monotonic() + _PLAYER_GONE_SECONDS
        with self._room:
            while self._queued and self._queued + nbytes > limit:  # one piece always fits an empty queue
                left = deadline - time.monotonic()
                if self._cancel.is_set():
                    return False
                if left <= 0:
                    _LOGGER.warning("the player took no audio for %.0fs; reply abandoned", _PLAYER_GONE_SECONDS)
                    return False
                self._room.wait(min(left, _ROOM_POLL_SECONDS))
            self._queued += nbytes
            self.peak_queued_bytes = max(self.peak_queued_bytes, self._queued)
        return True

    async def next(self, timeout: float) -> ReplyPiece:
        """The next piece within ``timeout`` seconds; raises the reader's ServerError or TimeoutError.

        Raises StreamBroken when the audio trickles in slower than ``min_bytes_per_second``.
        """
        # asyncio.timeout, not wait_for: wait_for returns a piece that arrives as the task is cancelled and
        # swallows the cancellation (Python < 3.12), so a hang-up or barge-in could leave the reply playing.
        async with asyncio.timeout(max(timeout, 0.0)):
            item = await self._queue.get()
        if isinstance(item, ServerError):
            raise item
        if isinstance(item, ReplyAudio):
            with self._room:
                self._queued -= len(item.pcm)
                self._room.notify_all()
            if self._rate.too_slow(time.monotonic(), len(item.pcm)):
                raise StreamBroken(f"the reply trickled in slower than {self._settings.min_bytes_per_second:g} bytes/s")
        return item

    def stop(self) -> None:
        """Abandon the reply: the reader stops at the next chunk and the connection is shut."""
        self._cancel.set()
        with self._room:
            self._room.notify_all()
        with self._lock:
            stream = self._stream
        if stream is not None and not self.done.is_set():
            stream.abort()
