"""A caller that never reads cannot keep its reply slot (issue 14): the stalled write times out, the slot returns."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import requests

from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn

WAIT = 60.0


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def send_and_never_read(url: str, body: dict[str, Any]) -> socket.socket:
    """POST ``body`` over a socket with a tiny receive buffer, then never read a byte of the answer."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
    sock.connect((host, int(port)))
    data = json.dumps(body).encode()
    head = (
        f"POST /process-text HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TEST_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def test_a_caller_that_never_reads_gives_its_slot_back(start_server: Any, tmp_path: Path) -> None:
    with OllamaStandIn() as ollama:
        ollama.script(*[f"This is sentence number {i} of a very long story that goes on and on. " for i in range(60)])
        limits = {"queue_depth": 1, "write_timeout_seconds": 1.0, "max_reply_seconds": 600.0}
        server: RunningServer = start_server(server_config(ollama.url, tmp_path, limits=limits))
        stalled = send_and_never_read(server.url, {"text": "Tell me a long story."})
        try:
            wait_until(lambda: server.slots_in_use() == 1, WAIT, "the reply to start")
            # The server fills the socket buffers, its write stalls, times out, and the reply is closed.
            wait_until(lambda: server.slots_in_use() == 0, WAIT, "the stalled reply's slot to come back")
            assert server.health()["status"] == "ok"
        finally:
            stalled.close()
        ollama.script("Hello again.")
        reply = requests.post(
            server.url + "/process-text", json={"text": "Anyone there?"}, timeout=WAIT,
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        )
        assert reply.status_code == 200 and len(reply.content) > 10000  # the one slot serves the next caller
