"""The bridge's HTTP side: the voice server's voices, speech (streamed PCM) and transcription, with the key."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import httpx

from common.protocol import Route

_LOGGER = logging.getLogger(__name__)
SPEECH_RATE: Final = 24000
"""/v1/audio/speech pcm: 24 kHz, 16-bit, mono."""
SPEECH_MODEL: Final = "chatterbox"


class ServerError(RuntimeError):
    """The voice server could not be reached or refused the request; the message says which."""


@dataclass(frozen=True)
class Voice:
    """One voice Home Assistant may pick: a character or a library voice."""

    voice_id: str
    name: str
    kind: str


class VoiceServer:
    """Async calls to the voice server; one connection pool, bounded timeouts."""

    def __init__(self, url: str, api_key: str | None, ca_cert: str | None, timeout_seconds: float = 30.0) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_cert) if ca_cert else True
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"), headers=headers, verify=verify,
            timeout=httpx.Timeout(timeout_seconds, connect=5.0),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def voices(self) -> list[Voice]:
        """Characters first, then library voices (GET /v1/audio/voices)."""
        data = await self._json("GET", "/v1/audio/voices")
        return [Voice(v["id"], v.get("name") or v["id"], v.get("type", "voice")) for v in data.get("voices", [])]

    async def default_character(self) -> str:
        """The character the server speaks with when none is named (GET /characters)."""
        return str((await self._json("GET", "/characters"))["default"])

    async def speech(self, text: str, voice: str) -> AsyncIterator[bytes]:
        """PCM16 mono at 24 kHz, chunk by chunk as the server speaks it."""
        body = {"model": SPEECH_MODEL, "input": text, "voice": voice, "response_format": "pcm"}
        try:
            async with self._http.stream("POST", "/v1/audio/speech", json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise ServerError(_refusal(response))
                async for chunk in response.aiter_raw():
                    if chunk:
                        yield chunk
        except httpx.HTTPError as err:
            raise ServerError(f"voice server unreachable: {type(err).__name__}") from err

    async def transcribe(self, wav: bytes) -> str:
        """What the server's Whisper heard in a WAV recording."""
        data = await self._json("POST", Route.TRANSCRIBE, content=wav, headers={"Content-Type": "audio/wav"})
        return str(data.get("text", ""))

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise ServerError(f"voice server unreachable: {type(err).__name__}") from err
        if response.status_code != 200:
            raise ServerError(_refusal(response))
        return response.json()  # type: ignore[no-any-return]


def _refusal(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.reason_phrase
    return f"voice server answered {response.status_code}: {message}"
