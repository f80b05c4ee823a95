"""Slowloris on 127.0.0.1: hundreds of unauthenticated connections that never finish a request.

Each kind has its number of connections, kept up for as long as the attack runs: an answer (a 408,
a 401) is ignored, and a connection the server closes is opened again, as a real attacker would. Bounded in time and in
the number of connections ever opened (reopened at most ``opens_per_second`` on average).

- ``hello``: three bytes of a TLS ClientHello (on plain HTTP: a request line), then nothing;
- ``idle``: connected, nothing sent;
- ``headers``: TLS done, a request line and headers, one more header line every 2 s, never the blank line;
- ``body``: TLS done, ``POST /process-audio`` announcing 1 MB, 1 kB sent, then a byte every 2 s;
- ``big_body``: the same with 20 kB sent first (more than a proxy buffers), then a byte every 2 s.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
import time
from pathlib import Path

KINDS = ("hello", "idle", "headers", "body", "big_body")
SLOWLORIS = {"hello": 75, "idle": 75, "headers": 75, "body": 75, "big_body": 25}
"""325 connections; the server can answer (401) and close the ``big_body`` ones at once, not the others."""
_TRICKLE_SECONDS = 2.0
_CONNECT_TIMEOUT = 3.0


class SlowClients:
    """Slow connections to 127.0.0.1:``port``, ``kinds`` of them (TLS when ``ca`` names the certificate to trust)."""

    def __init__(self, port: int, ca: Path | None, kinds: dict[str, int] | None = None, max_seconds: float = 300.0,
                 max_opens: int = 20000, opens_per_second: float = 20.0) -> None:
        self.port = port
        self.kinds = dict(SLOWLORIS if kinds is None else kinds)
        assert set(self.kinds) <= set(KINDS), self.kinds
        self.context = ssl.create_default_context(cafile=str(ca)) if ca else None
        self.max_seconds = max_seconds
        self.max_opens = max_opens
        self.opens_per_second = opens_per_second
        self._started = 0.0
        self.opened = 0
        """Connections opened so far (the first ones and the reopened)."""
        self.closed_by_server = dict.fromkeys(self.kinds, 0)
        """Per kind: connections the server closed."""
        self.answered = dict.fromkeys(self.kinds, 0)
        """Per kind: connections the server sent an answer on (the attacker keeps them open)."""
        self._answered: set[socket.socket] = set()
        self.failed_opens = 0
        self._socks: dict[socket.socket, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def open_now(self, *kinds: str) -> int:
        """Connections of these kinds (default: all) open right now, as the client sees them."""
        with self._lock:
            return sum(1 for k in self._socks.values() if not kinds or k in kinds)

    def by_kind(self) -> dict[str, int]:
        with self._lock:
            return {kind: sum(1 for k in self._socks.values() if k == kind) for kind in self.kinds}

    def start(self, fill_timeout: float = 60.0) -> SlowClients:
        """Start, and wait (bounded) until every connection was opened once."""
        self._thread.start()
        deadline = time.monotonic() + fill_timeout
        while self.opened < self.count and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Close every connection; the thread ends."""
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            socks, self._socks = list(self._socks), {}
        for sock in socks:
            with contextlib.suppress(OSError, KeyError, ValueError):
                self._selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self._selector.close()

    def __enter__(self) -> SlowClients:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # The attacker's loop: one thread, non-blocking sockets.

    def _run(self) -> None:
        self._started = time.monotonic()
        deadline = self._started + self.max_seconds
        next_trickle = time.monotonic() + _TRICKLE_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._top_up()
            for key, _ in self._selector.select(timeout=0.2):
                self._on_readable(key.fileobj)  # type: ignore[arg-type]
            if time.monotonic() >= next_trickle:
                next_trickle = time.monotonic() + _TRICKLE_SECONDS
                self._trickle()

    def _top_up(self) -> None:
        # The kinds needing no handshake first: against a stalled server they still get in.
        for kind, wanted in self.kinds.items():
            while (not self._stop.is_set() and self.opened < self.max_opens
                   and self.by_kind()[kind] < wanted and self._may_open()):
                sock = self._open(kind)
                self.opened += 1
                if sock is None:
                    self.failed_opens += 1
                    return  # the server does not take more now; try again next round
                sock.setblocking(False)
                with self._lock:
                    self._socks[sock] = kind
                self._selector.register(sock, selectors.EVENT_READ)

    def _may_open(self) -> bool:
        """The first ``count`` at once, then at most ``opens_per_second`` on average."""
        allowed = self.count + (time.monotonic() - self._started) * self.opens_per_second
        return self.opened < allowed

    def _open(self, kind: str) -> socket.socket | None:
        host = "127.0.0.1"
        try:
            raw = socket.create_connection((host, self.port), timeout=_CONNECT_TIMEOUT)
        except OSError:
            return None
        try:
            if kind == "idle":
                return raw
            if kind == "hello":
                raw.sendall(b"\x16\x03\x01" if self.context else b"GET /health HTTP/1.1\r\n")
                return raw
            sock: socket.socket = (self.context.wrap_socket(raw, server_hostname=host) if self.context else raw)
            if kind == "headers":
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n")
            else:
                sock.sendall(b"POST /process-audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: audio/wav\r\n"
                             b"Content-Length: 1000000\r\n\r\n" + b"\0" * (20000 if kind == "big_body" else 1000))
            return sock
        except OSError:
            raw.close()
            return None

    def _on_readable(self, sock: socket.socket) -> None:
        """An answer (a 408, a 401) is read and ignored: the attacker holds on until the server closes."""
        try:
            data = sock.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return  # TLS housekeeping (a session ticket), not an answer
        except OSError:
            data = b""
        if data:
            with self._lock:
                kind = self._socks[sock]
                first = sock not in self._answered
                self._answered.add(sock)
            self.answered[kind] += first
        else:
            self.closed_by_server[self._drop(sock)] += 1

    def _trickle(self) -> None:
        with self._lock:
            items = list(self._socks.items())
        for sock, kind in items:
            if kind in ("headers", "body", "big_body"):
                try:
                    sock.send(b"X-Slow: 1\r\n" if kind == "headers" else b"\0")
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
                except OSError:
                    self.closed_by_server[self._drop(sock)] += 1

    def _drop(self, sock: socket.socket) -> str:
        """Forget and close ``sock``; its kind."""
        with self._lock:
            kind = self._socks.pop(sock)
            self._answered.discard(sock)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self._selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()
        return kind
