"""One streamed reply read in a worker thread and handed to the event loop piece by piece.

A ``to_thread`` read cannot be cancelled from outside, so the reader checks a ``threading.Event``
between chunks, and ``stop()`` also shuts the socket so a read blocked on a silent server wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass

from pi_client.server.client import ReplyRequest, ReplyStream, ServerClient, ServerError, ServerUnavailable

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplyHead:
    """The reply's headers arrived: its session and (for /process-audio) what the server heard."""

    session_id: str | None
    transcript: str | None


@dataclass(frozen=True)
class ReplyAudio:
    """One piece of the reply's PCM16 mono."""

    sample_rate: int
    pcm: bytes


@dataclass(frozen=True)
class ReplyEnd:
    """The reply stream ended normally."""


ReplyPiece = ReplyHead | ReplyAudio | ReplyEnd


class ReplyPump:
    """Reads one streamed reply in a worker thread and hands its pieces to the event loop.

    ``stop()`` sets the thread's cancel event and shuts the socket, so a hang-up frees the
    connection at once and the server sees the disconnect.
    """

    def __init__(self, client: ServerClient, request: ReplyRequest) -> None:
        self._client = client
        self._request = request
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[ReplyPiece | ServerError] = asyncio.Queue()
        self._cancel = threading.Event()
        self._stream: ReplyStream | None = None
        self._lock = threading.Lock()
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
                self._put(ReplyHead(stream.session_id, stream.transcript))
                for pcm in stream.audio(self._cancel):
                    self._put(ReplyAudio(stream.sample_rate or 0, pcm))
                self._put(ReplyEnd())
        except ServerError as err:
            self._put(err)
        except Exception as err:  # a bug must not leave the call waiting for a piece that never comes
            _LOGGER.exception("reply reader failed")
            self._put(ServerUnavailable(f"reply reader failed: {err}"))
        finally:
            self.done.set()

    async def next(self, timeout: float) -> ReplyPiece:
        """The next piece within ``timeout`` seconds; raises the reader's ServerError or TimeoutError."""
        item = await asyncio.wait_for(self._queue.get(), timeout=max(timeout, 0.0))
        if isinstance(item, ServerError):
            raise item
        return item

    def stop(self) -> None:
        """Abandon the reply: the reader stops at the next chunk and the connection is shut."""
        self._cancel.set()
        with self._lock:
            stream = self._stream
        if stream is not None and not self.done.is_set():
            stream.abort()
