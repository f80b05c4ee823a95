"""The Ollama backend: replies from an Ollama server through the official ``ollama`` client, streamed."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cloud_server.llm.base import LLM, LLMError
from cloud_server.llm.cancellation import SocketCanceller, on_cancel, until_cancelled
from common.config import LLMConfig

_LOGGER = logging.getLogger(__name__)

_CONNECT_TIMEOUT_SECONDS = 5.0
_MAX_WARM_PROMPTS = 32
"""At most this many system prompts are warmed at start: the warm-up stays bounded with many characters."""
_WARM_WORDS = "Hello."
"""The user turn of a prompt warm-up: short, so the request is the system prompt's evaluation."""


def public_host(host: str) -> str:
    """The host for messages and logs, without any user:password part."""
    parts = urlsplit(host if "://" in host else "http://" + host)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
        self.context_tokens = cfg.context_tokens
        self.reply_tokens = cfg.max_tokens
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
        canceller = SocketCanceller(cancel)
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
                options=self._options(),
            )
            with on_cancel(cancel, canceller.abort) if watched else contextlib.nullcontext():
                # The request goes out on the first next(), in this thread: the transport finds it here.
                self._local.canceller = canceller
                for part in until_cancelled(stream, cancel, "LLM"):
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
            if stream is not None:
                # Closing the client's generator leaves its `with client.stream(...)`: the response
                # is closed, and an unfinished one takes its connection down with it.
                stream.close()

    def warm_up(self) -> None:
        """Ask Ollama to load the model (a chat with no messages) and keep it for ``keep_alive``."""
        self._warm_chat([])

    def warm_up_prompts(self, system_prompts: Sequence[str]) -> int:
        """One short chat per distinct system prompt, so Ollama has evaluated and cached each before a call.

        The first one also loads the model; with none, the model is only loaded. The first failure
        stops the rest (an unreachable Ollama costs one timeout, not one per character).
        """
        prompts = list(dict.fromkeys(p for p in system_prompts if p))[:_MAX_WARM_PROMPTS]
        if not prompts:
            self.warm_up()
            return 0
        for prompt in prompts:
            self._warm_chat(
                [{"role": "system", "content": prompt}, {"role": "user", "content": _WARM_WORDS}], num_predict=1
            )
        return len(prompts)

    def _warm_chat(self, messages: list[dict[str, str]], num_predict: int | None = None) -> None:
        options = self._options()
        if num_predict is not None:
            options["num_predict"] = num_predict
        try:
            # The same context size as the replies ask for: another one would make Ollama reload.
            self._warm_client.chat(
                model=self._cfg.model, messages=messages, think=False, keep_alive=self._cfg.keep_alive, options=options
            )
        except Exception as err:
            raise self._error(err, self._cfg.warm_up_timeout_seconds) from err

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

    def _options(self) -> dict[str, Any]:
        """Sampling and size options; ``num_ctx`` makes Ollama's context the one history is trimmed to."""
        return {
            "temperature": self._cfg.temperature,
            "num_predict": self._cfg.max_tokens,
            "num_ctx": self._cfg.context_tokens,
        }

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
