"""Hang-up for LLM backends: stop between pieces, and wake a read blocked on a socket."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

_LOGGER = logging.getLogger(__name__)
_POLL_SECONDS = 0.05

T = TypeVar("T")


def until_cancelled(pieces: Iterator[T], cancel: threading.Event | None, what: str) -> Iterator[T]:
    """Pass ``pieces`` through until ``cancel`` is set (checked before each piece is handed on)."""
    for passed, piece in enumerate(pieces):
        if cancel is not None and cancel.is_set():
            _LOGGER.info("%s reply cancelled after %d pieces", what, passed)
            return
        yield piece


@contextlib.contextmanager
def on_cancel(cancel: threading.Event, action: Callable[[], None], name: str = "llm-cancel") -> Iterator[None]:
    """Run ``action`` once, from a watcher thread, if ``cancel`` is set before the block ends."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(_POLL_SECONDS):
                action()
                return

    watcher = threading.Thread(target=watch, name=name, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()


class SocketCanceller:
    """Shuts down one streamed response's socket on cancel, waking a read blocked in another thread.

    Give ``trace`` to httpcore as the request's ``trace`` extension: it learns the socket as soon
    as the connection exists, so cancel works even before the server has answered.
    """

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore trace hook: remember the connection's socket as soon as it exists."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with self._lock:
                    self._socket = sock
                if self._cancel.is_set():
                    self.abort()

    def abort(self) -> None:
        """Shut the socket down (once); later reads on it fail at once."""
        with self._lock:
            sock, self._socket = self._socket, None
        if sock is not None:
            # shutdown, not close: close() does not wake a recv() blocked in another thread.
            with contextlib.suppress(OSError):  # already closed by the other side
                sock.shutdown(socket.SHUT_RDWR)
