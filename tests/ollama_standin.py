"""A local stand-in for an Ollama server, speaking its real HTTP protocol so the official client works.

Ollama itself cannot run here (no binary for this machine), so tests and the offline demo talk to
this instead: ``POST /api/chat`` and ``/api/generate`` streamed as NDJSON over chunked HTTP/1.1,
``/api/tags``, ``/api/show``, ``/api/version``, ``/api/ps`` and ``GET /``. Replies are scripted
(text pieces with pauses, HTTP errors, a stall, a dropped connection) or, with ``--smollm2``, come
from the real SmolLM2-135M through the embedded backend. Every request is recorded, including
whether the client hung up before the reply was complete.

Run: ``python -m tests.ollama_standin --port 11434 [--smollm2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from cloud_server.llm.base import LLM, LLMError
from cloud_server.llm.embedded import EmbeddedLLM

_LOGGER = logging.getLogger(__name__)

VERSION = "0.12.6"
DEFAULT_MODELS = ("llama3.2:3b", "smollm2:135m")
DEFAULT_REPLY = ("Hello! ", "This is the Ollama stand-in speaking. ", "How can I help you today?")
_POLL_SECONDS = 0.02
_MAX_STALL_SECONDS = 120.0


@dataclass(frozen=True)
class Script:
    """What the next chat/generate replies do: text pieces; a float pauses that many seconds, an Event until set."""

    steps: tuple[str | float | threading.Event, ...] = DEFAULT_REPLY
    status: int = 200
    """Answer with this HTTP status and ``{"error": error}`` instead of a reply."""
    error: str = "internal error"
    end: Literal["done", "stall", "drop", "error"] = "done"
    """done: a final ``done: true`` line; stall: stop sending, keep the connection; drop: cut it;
    error: an ``{"error": error}`` line, as Ollama sends when generation fails mid-reply."""


@dataclass
class RecordedRequest:
    """One request the stand-in received, and how its reply went."""

    method: str
    path: str
    body: Any = None
    pieces_sent: int = 0
    """Reply lines with text that reached the socket."""
    completed: bool = False
    """The whole reply, final line included, was sent."""
    client_closed: threading.Event = field(default_factory=threading.Event)
    """Set when the client closed the connection before the reply was complete."""
    finished: threading.Event = field(default_factory=threading.Event)
    """Set when the server is done with this request."""

    def _field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None

    @property
    def model(self) -> Any:
        return self._field("model")

    @property
    def messages(self) -> Any:
        return self._field("messages")

    @property
    def options(self) -> Any:
        return self._field("options")

    @property
    def keep_alive(self) -> Any:
        return self._field("keep_alive")

    @property
    def think(self) -> Any:
        return self._field("think")

    @property
    def stream(self) -> Any:
        return self._field("stream")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _model_entry(name: str) -> dict[str, Any]:
    family = "llama" if name.startswith(("llama", "smollm")) else name.split(":")[0]
    return {
        "name": name,
        "model": name,
        "modified_at": "2026-01-01T00:00:00Z",
        "size": 2_019_393_189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


class _ClientGone(Exception):
    """The client closed the connection."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.standin.lock:
            self.server.standin.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.standin.lock:
            self.server.standin.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        _LOGGER.debug("stand-in: " + format, *args)

    # ------------------------------------------------------------------ plumbing

    def _record(self, body: Any) -> RecordedRequest:
        rec = RecordedRequest(self.command, self.path.split("?")[0], body)
        with self.server.standin.lock:
            self.server.standin.requests.append(rec)
        return rec

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _pause(self, seconds: float, rec: RecordedRequest, gate: threading.Event | None = None) -> None:
        """Wait (for ``seconds`` or the gate), but notice at once if the client hangs up meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.server.standin.stopping.is_set():
            if self._client_gone():
                raise _ClientGone
            if gate is not None and gate.is_set():
                return
            time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _write_chunk(self, data: bytes, rec: RecordedRequest, started: list[bool]) -> None:
        if self._client_gone():
            raise _ClientGone
        try:
            if not started[0]:
                # Like Ollama, the headers go out with the first line, not before.
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                started[0] = True
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError as err:
            raise _ClientGone from err

    # ------------------------------------------------------------------ routes

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?")[0]
        self._record(None)
        if path in ("/", ""):
            data = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/api/version":
            self._send_json(200, {"version": VERSION})
        elif path == "/api/tags":
            self._send_json(200, {"models": [_model_entry(m) for m in self.server.standin.models]})
        elif path == "/api/ps":
            self._send_json(200, {"models": []})
        else:
            self._not_found()

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?")[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError as err:
            self._record(raw.decode(errors="replace"))
            self._send_json(400, {"error": f"invalid JSON: {err}"})
            return
        rec = self._record(body)
        try:
            if path in ("/api/chat", "/api/generate"):
                self._generate(rec, chat=path == "/api/chat")
            elif path == "/api/show":
                if self._known_model(body):
                    entry = _model_entry(body["model"])
                    self._send_json(
                        200,
                        {
                            "modelfile": f"FROM {body['model']}",
                            "parameters": "stop <|eot_id|>",
                            "template": "{{ .Prompt }}",
                            "details": entry["details"],
                            "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
                            "capabilities": ["completion"],
                            "modified_at": entry["modified_at"],
                        },
                    )
            else:
                self._not_found()
        finally:
            rec.finished.set()

    def _not_found(self) -> None:
        data = b"404 page not found"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _known_model(self, body: dict[str, Any]) -> bool:
        name = body.get("model") or ""
        if not name:
            self._send_json(400, {"error": "model is required"})
            return False
        if name not in self.server.standin.models:
            self._send_json(404, {"error": f"model '{name}' not found"})
            return False
        return True

    def _generate(self, rec: RecordedRequest, chat: bool) -> None:
        body = rec.body if isinstance(rec.body, dict) else {}
        if not self._known_model(body):
            return
        model = body["model"]
        if (chat and not body.get("messages")) or (not chat and not body.get("prompt")):
            # An empty request only loads the model (Ollama's documented warm-up form).
            load = {"model": model, "created_at": _now(), "done": True, "done_reason": "load"}
            load.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
            self._send_json(200, load)
            rec.completed = True
            return
        script = self.server.standin.current_script
        if script.status != 200:
            self._send_json(script.status, {"error": script.error})
            return
        started = time.monotonic()

        def line(text: str) -> dict[str, Any]:
            piece: dict[str, Any] = {"model": model, "created_at": _now()}
            piece.update({"message": {"role": "assistant", "content": text}} if chat else {"response": text})
            piece["done"] = False
            return piece

        cancel = threading.Event()
        if not body.get("stream", True):
            try:
                text = "".join(self._steps(script, body, cancel))
            except LLMError as err:  # the real model behind --smollm2 failed
                self._send_json(500, {"error": str(err)})
                return
            self._send_json(200, {**line(text), **self._final(started, rec)})
            rec.completed = True
            return
        head = [False]
        end, error = script.end, script.error
        try:
            # closing() ends a real model's generation (and frees it) when the client hangs up.
            with contextlib.closing(self._steps(script, body, cancel, rec)) as steps:
                try:
                    for text in steps:
                        self._write_chunk(json.dumps(line(text)).encode() + b"\n", rec, head)
                        rec.pieces_sent += 1
                except LLMError as err:  # the real model behind --smollm2 failed
                    end, error = "error", str(err)
            if end == "error":
                self._write_chunk(json.dumps({"error": error}).encode() + b"\n", rec, head)
                self.wfile.write(b"0\r\n\r\n")
                return
            if end == "stall":
                self._pause(_MAX_STALL_SECONDS, rec)
                return
            if end == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            final = {**line(""), **self._final(started, rec)}
            self._write_chunk(json.dumps(final).encode() + b"\n", rec, head)
            self.wfile.write(b"0\r\n\r\n")
            rec.completed = True
        except _ClientGone:
            cancel.set()
            rec.client_closed.set()
            self.close_connection = True
            _LOGGER.info("stand-in: client closed the stream after %d pieces", rec.pieces_sent)

    def _steps(
        self, script: Script, body: dict[str, Any], cancel: threading.Event, rec: RecordedRequest | None = None
    ) -> Iterator[str]:
        """Text pieces of the reply, pausing where the script says (or from the real model)."""
        backend = self.server.standin.backend
        if isinstance(backend, EmbeddedLLM):
            messages = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
            options = body.get("options") or {}
            yield from backend.stream_reply(
                messages, cancel, max_tokens=options.get("num_predict"), temperature=options.get("temperature")
            )
            return
        if backend is not None:
            messages = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
            yield from backend.stream_reply(messages, cancel)
            return
        for step in script.steps:
            if isinstance(step, str):
                yield step
            elif isinstance(step, threading.Event):
                if rec is not None:
                    self._pause(_MAX_STALL_SECONDS, rec, gate=step)
                else:
                    step.wait(_MAX_STALL_SECONDS)
            elif rec is not None:
                self._pause(float(step), rec)
            else:
                time.sleep(float(step))

    def _final(self, started: float, rec: RecordedRequest) -> dict[str, Any]:
        total = int((time.monotonic() - started) * 1e9)
        return {
            "done": True,
            "done_reason": "stop",
            "total_duration": total,
            "load_duration": 1_000_000,
            "prompt_eval_count": sum(len(str(m.get("content", ""))) // 4 for m in rec.messages or []),
            "prompt_eval_duration": 2_000_000,
            "eval_count": rec.pieces_sent,
            "eval_duration": total,
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: OllamaStandIn


class OllamaStandIn:
    """The stand-in server: ``with OllamaStandIn() as s: ...`` serves on ``s.url`` (127.0.0.1, free port)."""

    def __init__(self, models: tuple[str, ...] = DEFAULT_MODELS, backend: LLM | None = None, port: int = 0) -> None:
        self.models = models
        self.backend = backend
        """A real model to answer with instead of the script (the offline demo uses SmolLM2)."""
        self.requests: list[RecordedRequest] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.current_script = Script()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.standin = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(
        self,
        *steps: str | float | threading.Event,
        status: int = 200,
        error: str = "internal error",
        end: Literal["done", "stall", "drop", "error"] = "done",
    ) -> None:
        """Set what the following chat/generate replies do (see :class:`Script`)."""
        self.current_script = Script(tuple(steps) if steps else DEFAULT_REPLY, status, error, end)

    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded ``POST /api/chat`` requests, oldest first."""
        with self.lock:
            return [r for r in self.requests if r.path == "/api/chat"]

    def start(self) -> OllamaStandIn:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="ollama-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled replies end too."""
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self.lock:
            open_connections = list(self.connections)
        for conn in open_connections:  # kept-alive connections die with the server, as with a real one
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OllamaStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--smollm2", action="store_true", help="answer with the real SmolLM2-135M (embedded)")
    parser.add_argument("--model", action="append", default=[], help="also accept this model name")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for SmolLM2 (default: config's)")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    backend = None
    if args.smollm2:
        from common.config import LLMConfig, replace

        cfg = LLMConfig(backend="embedded")
        if args.threads is not None:
            cfg = replace(cfg, embedded_threads=args.threads)
        backend = EmbeddedLLM(cfg)
        backend.warm_up()
    standin = OllamaStandIn(DEFAULT_MODELS + tuple(args.model), backend=backend, port=args.port)
    with standin:
        _LOGGER.info("Ready: Ollama stand-in on %s (models: %s)", standin.url, ", ".join(standin.models))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
