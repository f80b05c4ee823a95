"""The phone's line to the cloud server: one persistent HTTP session, streamed WAV replies.

Blocking ``requests`` code lives here; the event loop reaches it through
:class:`~pi_client.server.reply_pump.ReplyPump` (one worker thread per reply, a ``threading.Event``
checked between chunks) and :class:`~pi_client.server.health.HealthMonitor`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from common.config import ClientConfig, ConfigError, expand_path
from common.protocol import Field, Header, Route
from common.wav import WavFormatError, WavStreamReader, write_wav

_LOGGER = logging.getLogger(__name__)

_CHUNK_BYTES = 8192
"""Largest piece read from the socket at once; a chunked reply yields each HTTP chunk as it lands."""
_SIDE_TIMEOUT_SECONDS = 3.0
"""Read timeout for the small side requests (health, session history), in seconds."""


class ServerError(Exception):
    """The server could not give a reply; the phone speaks with its own voice instead."""


class ServerUnavailable(ServerError):
    """No answer: refused, unreachable, timed out, a 5xx, or not the protocol we speak."""


class ServerRejected(ServerError):
    """The server refused this request (400/401/404/413): retrying the same request will not help."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Busy(ServerError):
    """The server's voice queue is full (503); it suggests trying again after ``retry_after`` seconds."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(f"server busy, retry after {retry_after:g}s {message}".strip())
        self.retry_after = retry_after


class StreamBroken(ServerError):
    """The reply stream stopped before its end (connection lost, server died, stalled)."""


@dataclass(frozen=True)
class ReplyRequest:
    """One turn to send: the caller's words as text (/process-text) or as audio (/process-audio)."""

    text: str | None = None
    audio_pcm: bytes | None = None
    """16 kHz PCM16 mono of the utterance, for /process-audio."""
    session_id: str | None = None
    character: str | None = None
    prompt: str | None = None
    history: tuple[dict[str, str], ...] = ()
    """The call so far, as the phone heard it (``role``/``content``, oldest first); sent when not empty."""
    call_id: str | None = None
    """A call the server placed, answered: the reply is the character's first words (``/calls/<id>/answer``)."""


@dataclass(frozen=True)
class LastTurn:
    """What ``GET /sessions/<id>`` says about the latest turn."""

    reply: str | None = None
    call_ended: bool = False
    """The character hung up in this reply (the server's ``call_ended``)."""


class ReplyStream:
    """An open streamed reply: status and headers checked, the WAV body still to read."""

    def __init__(self, response: requests.Response, max_seconds: float = float("inf")) -> None:
        self._response = response
        self._max_seconds = max_seconds
        self.session_id: str | None = response.headers.get(Header.SESSION_ID) or None
        self.character: str | None = response.headers.get(Header.CHARACTER) or None
        transcript = response.headers.get(Header.TRANSCRIPT)
        self.transcript: str | None = unquote(transcript) if transcript is not None else None
        self.sample_rate: int | None = None
        """Known once the WAV header has arrived (before the first chunk is yielded)."""
        self.on_complete: Callable[[], None] | None = None
        """Called once the whole reply has been read (not when cancelled or broken)."""
        self.call_ended = False
        """Set by ``on_complete`` (the fleet's, which reads the session anyway) when the server says the
        character hung up in this reply."""

    def audio(self, cancel: threading.Event) -> Iterator[bytes]:
        """PCM16 chunks (whole samples) as they arrive; stops early when ``cancel`` is set.

        A reply longer than ``max_seconds`` of audio is cut there with StreamBroken (an endless
        stream must not keep the phone talking, nor the file sink growing, for ever).
        """
        reader = WavStreamReader()
        carry = b""
        left = 0  # bytes still allowed, known once the header gives the rate
        try:
            for data in self._response.iter_content(chunk_size=_CHUNK_BYTES):
                if cancel.is_set():
                    return
                pcm = carry + reader.feed(data)
                if reader.format is None or not pcm:
                    carry = pcm
                    continue
                if self.sample_rate is None:
                    self.sample_rate = reader.format.sample_rate
                    left = _audio_bytes(self._max_seconds, self.sample_rate)
                cut = len(pcm) - len(pcm) % 2
                carry = pcm[cut:]
                if cut > left:
                    if left:
                        yield pcm[:left]
                    raise StreamBroken(f"reply longer than {self._max_seconds:g}s of audio, cut there")
                left -= cut
                if cut:
                    yield pcm[:cut]
        except WavFormatError as err:
            raise ServerUnavailable(f"reply is not a playable WAV stream: {err}") from err
        except (requests.RequestException, OSError) as err:
            if cancel.is_set():
                return
            raise StreamBroken(f"reply stream broke: {_short(err)}") from err
        if cancel.is_set():
            return
        if reader.format is None:
            raise StreamBroken("reply ended before its WAV header")
        if self.on_complete is not None:
            self.on_complete()

    def abort(self) -> None:
        """Wake a read blocked in another thread and drop the connection (the server sees it go)."""
        # requests cannot interrupt a read from another thread, and close() alone does not wake a
        # thread blocked in recv() on Linux; shutting the socket down does.
        sock = _socket_of(self._response)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Release the response (stream=True holds the connection until closed)."""
        self._response.close()

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The TCP socket a streamed response reads from (urllib3 2.x over http.client), or None."""
    # The body's file object holds the socket even when the server said "Connection: close"
    # (http.client then drops the connection's own reference, so conn.sock is None).
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if not isinstance(sock, socket.socket):
        sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _audio_bytes(seconds: float, sample_rate: int) -> int:
    """Bytes of PCM16 mono in ``seconds`` of audio, whole samples (huge for an unlimited reply)."""
    return int(min(seconds, 1e9) * sample_rate) * 2


def _short(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def check_server_url(url: str) -> str:
    """The base URL without a trailing slash; ConfigError naming pi.server_url when it is unusable."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"pi.server_url: expected http://host:port or https://host, got {url!r}")
    return url.rstrip("/")


class ServerClient:
    """Talks to one cloud server over a single keep-alive session (a TLS handshake costs two round trips)."""

    def __init__(self, base_url: str, api_key: str | None, cfg: ClientConfig) -> None:
        self.base_url = check_server_url(base_url)
        self._cfg = cfg
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # Passed on every request: a Session.verify path loses to $REQUESTS_CA_BUNDLE, which would
        # silently drop the pin on a machine that sets it.
        self._verify: str | bool = True
        if cfg.ca_cert:
            ca = expand_path(cfg.ca_cert)
            if not ca.is_file():
                raise ConfigError(f"pi.client.ca_cert: no such file {ca}")
            self._verify = str(ca)
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"
        self._session.headers["User-Agent"] = "ai-telephone-pi"

    @property
    def settings(self) -> ClientConfig:
        """The client settings (timeouts and reply limits) this client was built with."""
        return self._cfg

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def _timeout(self, read: float) -> tuple[float, float]:
        return (self._cfg.connect_timeout_seconds, read)

    def open_reply(
        self,
        text: str,
        session_id: str | None = None,
        character: str | None = None,
        prompt: str | None = None,
        history: tuple[dict[str, str], ...] = (),
    ) -> ReplyStream:
        """POST /process-text; returns the open stream (use it in a ``with`` block)."""
        body: dict[str, Any] = {Field.TEXT: text}
        for key, value in ((Field.SESSION_ID, session_id), (Field.CHARACTER, character), (Field.PROMPT, prompt)):
            if value:
                body[key] = value
        if history:
            body[Field.HISTORY] = list(history)
        return self._post_stream(Route.PROCESS_TEXT, json=body)

    def send_audio(
        self,
        pcm16k: bytes,
        session_id: str | None = None,
        character: str | None = None,
        prompt: str | None = None,
        history: tuple[dict[str, str], ...] = (),
    ) -> ReplyStream:
        """POST /process-audio with the utterance as a WAV body; the transcript comes back in a header.

        With a history the upload is multipart, the history a form field: the conversation never
        goes into a URL (URLs end up in logs).
        """
        wav = io.BytesIO()
        write_wav(wav, pcm16k, 16000)
        fields = ((Field.SESSION_ID, session_id), (Field.CHARACTER, character), (Field.PROMPT, prompt))
        if history:
            form = {name: value for name, value in fields if value}
            form[Field.HISTORY] = json.dumps(list(history), ensure_ascii=False)
            return self._post_stream(
                Route.PROCESS_AUDIO, files={"audio": ("turn.wav", wav.getvalue(), "audio/wav")}, data=form
            )
        return self._post_stream(
            Route.PROCESS_AUDIO,
            data=wav.getvalue(),
            headers={"Content-Type": "audio/wav"},
            params={name: value for name, value in fields if value},
        )

    def open(self, request: ReplyRequest) -> ReplyStream:
        """Send one turn the way the request says (an answered call, text or audio)."""
        if request.call_id is not None:
            body = {k: v for k, v in ((Field.SESSION_ID, request.session_id), (Field.PROMPT, request.prompt)) if v}
            return self._post_stream(f"{Route.CALLS}/{quote(request.call_id, safe='')}/answer", json=body)
        if request.audio_pcm is not None:
            return self.send_audio(
                request.audio_pcm, request.session_id, request.character, request.prompt, request.history
            )
        return self.open_reply(
            request.text or "", request.session_id, request.character, request.prompt, request.history
        )

    def _post_stream(self, path: str, **kwargs: Any) -> ReplyStream:
        try:
            response = self._session.post(
                self.base_url + path,
                stream=True,
                timeout=self._timeout(self._cfg.read_timeout_seconds),
                verify=self._verify,
                **kwargs,
            )
        except requests.RequestException as err:
            raise ServerUnavailable(f"{self.base_url} unreachable: {_short(err)}") from err
        if response.status_code == 200:
            ctype = response.headers.get("Content-Type", "")
            if not ctype.startswith("audio/"):
                response.close()
                raise ServerUnavailable(f"expected audio/wav, got {ctype or 'no content type'}")
            return ReplyStream(response, self._cfg.max_reply_seconds)
        with response:
            raise _error_for(response)

    def health(self) -> dict[str, Any]:
        """GET /health (no key needed); raises ServerUnavailable when it does not answer ok."""
        try:
            response = self._session.get(
                self.base_url + Route.HEALTH, timeout=self._timeout(_SIDE_TIMEOUT_SECONDS), verify=self._verify
            )
            payload = response.json()
        except (requests.RequestException, ValueError) as err:
            raise ServerUnavailable(f"health check failed: {_short(err)}") from err
        if response.status_code != 200 or not isinstance(payload, dict):
            raise ServerUnavailable(f"health check answered {response.status_code}")
        return payload

    def reply_text(self, session_id: str) -> str | None:
        """The last assistant message of a session (for the turn's log line); None when unavailable."""
        return self.last_turn(session_id).reply

    def last_turn(self, session_id: str) -> LastTurn:
        """How the session's last turn ended: its reply text, and whether the character hung up."""
        try:
            response = self._session.get(
                f"{self.base_url}{Route.SESSIONS}/{quote(session_id, safe='')}",
                timeout=self._timeout(_SIDE_TIMEOUT_SECONDS),
                verify=self._verify,
            )
            session = response.json() if response.status_code == 200 else None
            history = session.get("history") if isinstance(session, dict) else None
        except (requests.RequestException, ValueError, AttributeError) as err:
            _LOGGER.debug("no reply text for session %s: %s", session_id, err)
            return LastTurn()
        if not isinstance(session, dict) or not isinstance(history, list):
            return LastTurn()
        ended = session.get("call_ended") is True
        for entry in reversed(history):
            if isinstance(entry, dict) and entry.get("role") == "assistant":
                return LastTurn(str(entry.get("content", "")), ended)
        return LastTurn(None, ended)

    def reachable(self) -> bool:
        """True when the server answers /health now (a quick check after a reply broke off)."""
        try:
            self.health()
        except ServerUnavailable:
            return False
        return True

    def exchange(
        self,
        method: str,
        path: str,
        read_timeout: float = _SIDE_TIMEOUT_SECONDS,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """A small JSON request (the ring API): the parsed body, None for 204; the typed error otherwise."""
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                params=params,
                json=body,
                timeout=self._timeout(read_timeout),
                verify=self._verify,
            )
        except requests.RequestException as err:
            raise ServerUnavailable(f"{self.base_url} unreachable: {_short(err)}") from err
        with response:
            if response.status_code == 204:
                return None
            if response.status_code not in (200, 201):
                raise _error_for(response)
            try:
                return response.json()
            except ValueError as err:
                raise ServerUnavailable(f"{path} answered no JSON") from err

    def report_heard(self, session_id: str, heard_seconds: float, withdrawn: bool = False) -> str | None:
        """POST /sessions/<id>/heard after a barge-in: the server keeps only what the caller heard of its
        latest reply (``withdrawn``: none, the turn is dropped). The text it now holds, or None when the
        report failed (logged; the call goes on)."""
        url = f"{self.base_url}{Route.SESSIONS}/{quote(session_id, safe='')}{Route.HEARD}"
        try:
            response = self._session.post(
                url,
                json={
                    Field.HEARD_SECONDS: round(max(heard_seconds, 0.0), 3),
                    **({Field.WITHDRAWN: True} if withdrawn else {}),
                },
                timeout=self._timeout(_SIDE_TIMEOUT_SECONDS),
                verify=self._verify,
            )
            with response:
                if response.status_code != 200:
                    raise _error_for(response)
                text = response.json().get("heard_text")
        except (requests.RequestException, ValueError, AttributeError, ServerError) as err:
            _LOGGER.warning("heard report for session %s failed: %s", session_id, _short(err))
            return None
        return text if isinstance(text, str) else None

    def characters(self) -> dict[str, Any]:
        """GET /characters: who one can call, each with its voice and greeting text."""
        return self._get_json("/characters")

    def greeting(self, character_id: str) -> bytes:
        """GET /characters/<id>/greeting: the greeting as WAV bytes, in the character's own voice."""
        return self._get(f"/characters/{quote(character_id, safe='')}/greeting", self._cfg.read_timeout_seconds)

    def filler(self, character_id: str) -> bytes:
        """GET /characters/<id>/filler: the thinking filler as WAV bytes, in the character's own voice."""
        return self._get(f"/characters/{quote(character_id, safe='')}/filler", self._cfg.read_timeout_seconds)

    def _get(self, path: str, read_timeout: float) -> bytes:
        """GET ``path``: the body of a 200; ServerUnavailable when unreachable, the typed error otherwise."""
        try:
            response = self._session.get(self.base_url + path, timeout=self._timeout(read_timeout), verify=self._verify)
        except requests.RequestException as err:
            raise ServerUnavailable(f"{self.base_url} unreachable: {_short(err)}") from err
        with response:
            if response.status_code != 200:
                raise _error_for(response)
            return response.content

    def _get_json(self, path: str) -> dict[str, Any]:
        body = self._get(path, _SIDE_TIMEOUT_SECONDS)
        try:
            payload = json.loads(body)
        except ValueError as err:
            raise ServerUnavailable(f"{path} answered no JSON") from err
        if not isinstance(payload, dict):
            raise ServerUnavailable(f"{path} answered {type(payload).__name__}, not an object")
        return payload


def _error_for(response: requests.Response) -> ServerError:
    """Turn a non-200 answer into the typed error the call logic decides on."""
    code, message = "", ""
    with contextlib.suppress(ValueError, AttributeError, requests.RequestException):
        error = response.json().get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    status = response.status_code
    if status == 503:
        try:
            retry_after = float(response.headers.get("Retry-After", ""))
        except ValueError:
            retry_after = float("inf")
        return Busy(retry_after, message)
    if 400 <= status < 500:
        return ServerRejected(status, code or str(status), message or response.reason or "")
    return ServerUnavailable(f"server answered {status} {code} {message}".strip())
