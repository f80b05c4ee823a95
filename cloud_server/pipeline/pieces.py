"""The LLM's text pieces read on their own thread, so the sentence splitter can notice a pause.

A blocking ``for piece in stream`` cannot tell "the LLM paused after a sentence" from "the next
token is on its way"; reading on a thread into a bounded queue lets the reader wait with a timeout
and hand over a ``None`` (quiet) when nothing came in time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

_CANCEL_CHECK_SECONDS = 0.1
"""How often a wait with no deadline looks at the cancel event (never on the path to audio: data wakes it)."""
_PIECES_AHEAD = 256


class _End:
    pass


_END = _End()


def paced(
    pieces: Iterator[str], cancel: threading.Event, quiet_after: Callable[[], float | None]
) -> Iterator[str | None]:
    """Yield the pieces as they come, and ``None`` whenever ``quiet_after()`` seconds pass without one.

    ``quiet_after`` is asked before every wait (None: wait for the next piece however long it takes).
    An exception raised by ``pieces`` is raised here; a cancel ends the iteration.
    """
    feed: queue.Queue[str | BaseException | _End] = queue.Queue(maxsize=_PIECES_AHEAD)

    def put(item: str | BaseException | _End) -> bool:
        while not cancel.is_set():
            try:
                feed.put(item, timeout=_CANCEL_CHECK_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for piece in pieces:
                if not put(piece):
                    return
            put(_END)
        except BaseException as err:  # handed to the consumer, which decides what it means
            put(err)

    reader = threading.Thread(target=read, name="llm-pieces", daemon=True)
    reader.start()
    while not cancel.is_set():
        limit = quiet_after()
        try:
            item = feed.get(timeout=_CANCEL_CHECK_SECONDS if limit is None else limit)
        except queue.Empty:
            if limit is not None:
                yield None
            continue
        if isinstance(item, _End):
            return
        if isinstance(item, BaseException):
            raise item
        yield item
