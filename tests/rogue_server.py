"""A server that answers the phone's protocol badly, on 127.0.0.1: endless, trickling, or with a bad WAV header.

It speaks just enough of ``cloud_server`` (``POST /process-text`` and ``/process-audio`` streaming
a chunked ``audio/wav`` body, ``GET /health``) for the real Pi client to talk to it, and records
how much it sent and whether the phone hung up, so tests can check the phone's side of the fault.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import numpy as np

from common.wav import wav_header

Mode = Literal["endless", "trickle", "slow_header", "rate0", "stereo"]
RATE = 16000
_PIECE_BYTES = 64 * 1024
_BOUND_SECONDS = 300.0
"""Nothing here runs longer than this, whatever the phone does, in seconds."""


def tone(seconds: float, rate: int = RATE, channels: int = 1) -> bytes:
    """A 440 Hz tone as PCM16 (interleaved when ``channels`` > 1)."""
    t = np.arange(round(seconds * rate)) / rate
    mono = (0.4 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype("<i2")
    return np.repeat(mono, channels).tobytes()


class RogueServer:
    """``with RogueServer("endless") as server:`` ... ``server.url``; ``server.sent`` counts body bytes."""

    key = "rogue-key"

    def __init__(
        self, mode: Mode, trickle_bytes: int = 2, trickle_every: float = 0.05, header_byte_every: float = 0.25
    ) -> None:
        self.mode = mode
        self.trickle_bytes, self.trickle_every = trickle_bytes, trickle_every
        self.header_byte_every = header_byte_every
        """slow_header: seconds between bytes (the 44-byte header then takes 11 s by default)."""
        self.sent = 0
        """Body bytes written to the phone so far (all requests)."""
        self.requests = 0
        self.hung_up = threading.Event()
        """Set when a write failed because the phone closed the connection."""
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rogue-server", daemon=True)

    def __enter__(self) -> RogueServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def body(self) -> Any:
        """The reply body, piece by piece, as this mode misbehaves."""
        deadline = time.monotonic() + _BOUND_SECONDS
        if self.mode == "rate0":
            yield wav_header(0) + tone(1.0)
        elif self.mode == "stereo":
            yield wav_header(RATE, channels=2) + tone(1.0, channels=2)
        elif self.mode == "slow_header":  # one byte at a time from the start: no audio for a long while
            for byte in wav_header(RATE) + tone(1.0):
                if self._stop.wait(self.header_byte_every):
                    return
                yield bytes([byte])
        elif self.mode == "endless":  # a valid stream as fast as the socket takes it, for ever
            yield wav_header(RATE)
            piece = tone(_PIECE_BYTES / 2 / RATE)
            while not self._stop.is_set() and time.monotonic() < deadline:
                yield piece
        else:  # trickle: one second of audio (playback starts), then a few bytes now and then
            yield wav_header(RATE) + tone(1.0)
            piece = tone(1.0)[: self.trickle_bytes]
            while not self._stop.wait(self.trickle_every) and time.monotonic() < deadline:
                yield piece


def _handler(server: RogueServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # quiet: pytest output stays readable

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b'{"status": "ok"}' if self.path == "/health" else b'{"error": {"code": "not_found"}}'
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            server.requests += 1
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Session-Id", f"rogue-{server.requests}")
            self.end_headers()
            try:
                for piece in server.body():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                    server.sent += len(piece)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                server.hung_up.set()
            self.close_connection = True

    return Handler
