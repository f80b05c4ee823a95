"""gunicorn settings: one worker holds the GPU model, threads carry the streamed replies.

Bind from AI_TELEPHONE_BIND (else server.host:server.port); TLS when AI_TELEPHONE_TLS_CERT and
AI_TELEPHONE_TLS_KEY name a certificate and key. In production scripts/serve runs this behind HAProxy,
which terminates TLS and bounds slow clients, with gunicorn on a private unix socket.
"""

import logging
import os

# Chatterbox draws a tqdm bar per speech token; tqdm reads this once, at its first import.
os.environ.setdefault("TQDM_DISABLE", "1")

from common.config import load_config

# The app logs through the standard logging module; give it a handler in the master (workers inherit).
logging.basicConfig(
    level=os.environ.get("AI_TELEPHONE_LOG_LEVEL", "info").upper(),
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)

_cfg = load_config()
bind = [os.environ.get("AI_TELEPHONE_BIND") or f"{_cfg.server.host}:{_cfg.server.port}"]
# One process = one copy of Chatterbox on the GPU; the reply gate bounds the work inside it.
workers = 1
worker_class = "gthread"
# Phones waiting for a call (GET /calls/next, a long-poll) each hold a thread too.
threads = max(8, _cfg.server.limits.queue_depth * 2) + _cfg.server.calls.max_waiting
# Streams can be long and the model loads slowly; the worker must not be killed mid-reply.
timeout = 300
graceful_timeout = 30
keepalive = 30
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("AI_TELEPHONE_LOG_LEVEL", "info")
certfile = os.environ.get("AI_TELEPHONE_TLS_CERT") or None
keyfile = os.environ.get("AI_TELEPHONE_TLS_KEY") or None


def _close_unix_connections_at_once() -> None:
    """Behind scripts/serve's front (gunicorn on a unix socket), close a finished connection at once.

    gunicorn 25+ closes a connection whose request body was not all read by lingering up to 2 s for
    the rest (``util.close_graceful``: a TCP reset could cut the reply short), and gthread does it on
    its main loop: a client that sends 16 kB of a large body and then dribbles, unauthenticated,
    stalls every request for 2 s. On a unix socket there is no reset to avoid; close without waiting.
    """
    import socket

    from gunicorn import util

    linger = getattr(util, "close_graceful", None)
    if linger is None or getattr(linger, "ai_telephone", False):
        return

    def close_graceful(sock: socket.socket, *args: object, **kwargs: object) -> None:
        if sock.family == socket.AF_UNIX:
            util.close(sock)
        else:
            linger(sock, *args, **kwargs)

    close_graceful.ai_telephone = True  # type: ignore[attr-defined]
    util.close_graceful = close_graceful


if bind[0].startswith("unix:"):
    _close_unix_connections_at_once()
