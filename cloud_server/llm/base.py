"""The LLM seam: ``stream_reply(messages) -> iterator of text``, backed by Ollama or an embedded GGUF."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from common.config import LLMConfig

_LOGGER = logging.getLogger(__name__)

_CONNECT_TIMEOUT_SECONDS = 5.0
_CANCEL_POLL_SECONDS = 0.05


class LLMError(RuntimeError):
    """The LLM could not answer (unreachable, timed out, unknown model, failed); the message says why."""


class LLM(ABC):
    """One chat model. ``stream_reply`` may be called from several threads."""

    name: str = "llm"
    model: str = ""

    @abstractmethod
    def stream_reply(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply's text pieces as they are generated; stop early once ``cancel`` is set.

        Raises LLMError (also from inside the iteration). Closing the iterator stops generation.
        """

    @abstractmethod
    def warm_up(self) -> None:
        """Load the model now so the first caller does not wait; raise LLMError if it cannot."""

    @abstractmethod
    def is_reachable(self) -> bool:
        """Cheap, bounded check for /health: can a reply be produced right now?"""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections or the model (default: nothing)."""


def make_llm(cfg: LLMConfig) -> LLM:
    """The backend the config names: Ollama (default) or the embedded llama.cpp model."""
    if cfg.backend == "embedded":
        from cloud_server.llm.embedded import EmbeddedLLM

        return EmbeddedLLM(cfg)
    return OllamaLLM(cfg)


def public_host(host: str) -> str:
    """The host for messages and logs, without any user:password part."""
    parts = urlsplit(host if "://" in host else "http://" + host)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _StreamCanceller:
    """Shuts down one streamed response's socket when ``cancel`` is set, waking a blocked read."""

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._done = threading.Event()
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
                    self._abort()

    def watch(self) -> None:
        """Thread body: wait for cancel (or the end of the reply), then abort the stream."""
        while not self._done.is_set():
            if self._cancel.wait(_CANCEL_POLL_SECONDS):
                self._abort()
                return

    def finish(self) -> None:
        self._done.set()

    def _abort(self) -> None:
        with self._lock:
            sock, self._socket = self._socket, None
        if sock is not None:
            # shutdown, not close: close() does not wake a recv() blocked in another thread.
            with contextlib.suppress(OSError):  # already closed by the other side
                sock.shutdown(socket.SHUT_RDWR)


def _traced_transport(local: threading.local) -> Any:
    """An httpx transport that hands each chat request's new socket to the caller's canceller.

    Connections are not kept alive, so every reply opens its own and the socket is known from
    the moment it connects: cancel then works even while Ollama has not answered yet.
    """
    import httpx

    class _TracedTransport(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            canceller = getattr(local, "canceller", None)
            if canceller is not None:
                local.canceller = None
                request.extensions = {**request.extensions, "trace": canceller.trace}
            return super().handle_request(request)

    return _TracedTransport(limits=httpx.Limits(max_keepalive_connections=0))


class OllamaLLM(LLM):
    """Replies from an Ollama server through the official ``ollama`` client, streamed."""

    name = "ollama"

    def __init__(self, cfg: LLMConfig) -> None:
        import httpx
        import ollama

        self._cfg = cfg
        self.model = cfg.model
        self._host = public_host(cfg.ollama_host)
        self._local = threading.local()
        connect = self._connect_timeout = min(cfg.timeout_seconds, _CONNECT_TIMEOUT_SECONDS)
        # The client's default timeout is None (wait forever): always pass one.
        self._client = ollama.Client(
            host=cfg.ollama_host,
            timeout=httpx.Timeout(cfg.timeout_seconds, connect=connect),
            transport=_traced_transport(self._local),
        )
        self._warm_client = ollama.Client(
            host=cfg.ollama_host, timeout=httpx.Timeout(cfg.warm_up_timeout_seconds, connect=connect)
        )
        probe = min(cfg.health_timeout_seconds, connect)
        self._probe_client = ollama.Client(host=cfg.ollama_host, timeout=httpx.Timeout(probe))

    def stream_reply(self, messages: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        """Stream a chat reply; cancel or closing the iterator closes the HTTP stream at once."""
        watched = cancel is not None
        cancel = cancel if cancel is not None else threading.Event()
        canceller = _StreamCanceller(cancel)
        watcher = threading.Thread(target=canceller.watch, name="llm-cancel", daemon=True)
        started = time.monotonic()
        pieces = 0
        stream: Any = None  # the client types it as Iterator; it is a generator with close()
        try:
            if cancel.is_set():
                return
            stream = self._client.chat(
                model=self._cfg.model,
                messages=messages,
                stream=True,
                think=False,
                keep_alive=self._cfg.keep_alive,
                options={"temperature": self._cfg.temperature, "num_predict": self._cfg.max_tokens},
            )
            if watched:
                watcher.start()
            # The request goes out on the first next(), in this thread: the transport finds it here.
            self._local.canceller = canceller
            for part in stream:
                if cancel.is_set():
                    _LOGGER.info("LLM reply cancelled after %d pieces", pieces)
                    return
                text = part.message.content
                if text:
                    if pieces == 0:
                        _LOGGER.info("LLM first piece after %.2f s", time.monotonic() - started)
                    pieces += 1
                    yield text
                if part.done:
                    _LOGGER.info(
                        "LLM reply done (%s): %s tokens in %.2f s",
                        part.done_reason,
                        part.eval_count,
                        time.monotonic() - started,
                    )
        except LLMError:
            raise
        except Exception as err:
            if cancel.is_set():
                _LOGGER.info("LLM reply cancelled after %d pieces", pieces)
                return
            raise self._error(err, self._cfg.timeout_seconds) from err
        finally:
            self._local.canceller = None
            canceller.finish()
            if stream is not None:
                # Closing the client's generator leaves its `with client.stream(...)`: the response
                # is closed, and an unfinished one takes its connection down with it.
                stream.close()

    def warm_up(self) -> None:
        """Ask Ollama to load the model (a chat with no messages) and keep it for ``keep_alive``."""
        started = time.monotonic()
        try:
            self._warm_client.chat(model=self._cfg.model, messages=[], keep_alive=self._cfg.keep_alive)
        except Exception as err:
            raise self._error(err, self._cfg.warm_up_timeout_seconds) from err
        _LOGGER.info("LLM %s loaded on %s in %.2f s", self.model, self._host, time.monotonic() - started)

    def is_reachable(self) -> bool:
        """True when Ollama answers its model list within ``health_timeout_seconds``."""
        try:
            self._probe_client.list()
        except Exception as err:
            _LOGGER.debug("Ollama at %s unreachable: %s", self._host, err)
            return False
        return True

    def close(self) -> None:
        """Close the HTTP connection pools."""
        for client in (self._client, self._warm_client, self._probe_client):
            client.close()

    def _error(self, err: Exception, timeout: float) -> LLMError:
        """Translate a client or transport failure into a message a person understands."""
        import httpx
        import ollama

        where = f"Ollama at {self._host}"
        if isinstance(err, ollama.ResponseError):
            detail = str(err.error)[:200]
            if err.status_code == 404 and "model" in detail:
                return LLMError(f"model '{self.model}' is not available on {where} (run: ollama pull {self.model})")
            if err.status_code > 0:
                return LLMError(f"{where} answered HTTP {err.status_code}: {detail}")
            return LLMError(f"{where} failed mid-reply: {detail}")
        if isinstance(err, (ConnectionError, httpx.ConnectError)):
            return LLMError(f"cannot reach {where}: is it running?")
        if isinstance(err, httpx.ConnectTimeout):
            return LLMError(f"cannot reach {where}: no answer to connect within {self._connect_timeout:g} s")
        if isinstance(err, httpx.TimeoutException):
            return LLMError(f"{where} stopped answering (no data for {timeout:g} s)")
        if isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError)):
            return LLMError(f"{where} closed the connection before the reply was complete")
        if isinstance(err, ValueError):  # bad JSON line, or a message the client rejects
            return LLMError(f"{where}: unusable request or reply ({type(err).__name__}: {str(err)[:200]})")
        return LLMError(f"{where} failed: {type(err).__name__}: {str(err)[:200]}")
