"""A timeout on every write to the caller, so a client that stops reading cannot hold a reply slot forever.

gunicorn's gthread worker and werkzeug's server both write the reply with a blocking ``sendall`` and
no timeout: a caller that never reads keeps the thread, and the reply slot, until restart. Both put
the connection's socket in the WSGI environ; this sets its timeout before the app runs, so a stalled
write raises, the server closes the reply (which releases its slot) and the thread comes back.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")

WSGIApp = Any


class WriteTimeout:
    """WSGI middleware: each request's connection gets a send/receive timeout of ``seconds``."""

    def __init__(self, app: WSGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        for key in _SOCKET_KEYS:
            sock = environ.get(key)
            if isinstance(sock, socket.socket):
                sock.settimeout(self.seconds)
                break
        return self.app(environ, start_response)  # type: ignore[no-any-return]
