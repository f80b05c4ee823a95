"""Noticing a caller who hung up while a whole (not streamed) answer is still being made.

A streamed reply learns it at its next write (the WSGI server closes the body and
``call_on_close`` cancels the work). A whole-file answer (mp3/flac/opus, whose headers carry the
length) writes nothing until the end, so instead a watcher thread polls the request's TCP socket
for the peer's FIN (``POLLRDHUP``: Linux; it works under TLS too, because it looks below the
TLS layer and consumes nothing). Both gunicorn (``gunicorn.socket``) and the Werkzeug server
(``werkzeug.socket``) put the socket in the WSGI environ; elsewhere there is nothing to watch
and the work runs to its end, still capped by ``server.limits.max_speech_seconds``. Behind a
proxy the proxy must close its upstream connection when its client leaves (Caddy does;
HAProxy with ``option abortonclose``). A client that half-closes its side after sending the
request looks gone too; HTTP clients do not do that.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

_LOGGER = logging.getLogger(__name__)
POLL_SECONDS: Final = 0.2
_GONE: Final = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR | select.POLLNVAL


def client_socket(environ: Mapping[str, Any]) -> socket.socket | None:
    """The request's socket as the WSGI server hands it over, or None when it does not."""
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


def peer_closed(sock: socket.socket) -> bool:
    """True once the caller closed the connection (or it broke); never blocks, reads nothing."""
    try:
        fd = sock.fileno()
    except OSError:
        return True
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, _GONE)
    return any(events & _GONE for _, events in poller.poll(0))


@contextmanager
def cancel_on_disconnect(environ: Mapping[str, Any], cancel: threading.Event) -> Iterator[None]:
    """Set ``cancel`` as soon as the caller of this request goes away, while the block runs."""
    sock = client_socket(environ)
    if sock is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(POLL_SECONDS):
            if peer_closed(sock):
                _LOGGER.info("Caller left before the answer was ready: stopping its synthesis")
                cancel.set()
                return

    watcher = threading.Thread(target=watch, name="disconnect-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=2 * POLL_SECONDS)
