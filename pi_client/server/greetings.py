"""Each character's greeting in its own voice, fetched from the server once and cached on the phone.

The cache key is what the server says about the character (``GET /characters``: its voice,
greeting text and settings, and the engine speaking): when any of it changes, the next call
fetches the greeting again. One small JSON request per call is the price of never greeting a
caller in a voice the character no longer has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from common.atomic import atomic_write
from common.config import expand_path
from common.wav import read_wav_pcm16, wav_header
from pi_client.server.client import ServerError, ServerRejected

_LOGGER = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Greeting:
    """What the server said about a character's greeting."""

    known: bool = True
    """False: the server has no such character (the number is not in service)."""
    pcm: bytes | None = None
    """PCM16 mono in the character's voice; None when the server could not be reached."""
    sample_rate: int = 0


class GreetingSource(Protocol):
    """Where greetings come from: one server's client, or the phone's fleet of servers."""

    def characters(self) -> dict[str, Any]:
        """GET /characters."""

    def greeting(self, character_id: str) -> bytes:
        """A character's greeting as WAV bytes."""

    def filler(self, character_id: str) -> bytes:
        """A character's thinking filler as WAV bytes."""


class GreetingCache:
    """Greetings on disk under ``cache_dir``, one file per character and voice."""

    def __init__(
        self,
        client: GreetingSource,
        cache_dir: str | os.PathLike[str],
        kind: Literal["greeting", "filler"] = "greeting",
    ) -> None:
        """``kind``: the character's greeting, or its thinking filler (the same cache, another folder)."""
        self._client = client
        self._kind = kind
        self._download = client.greeting if kind == "greeting" else client.filler
        self._dir = expand_path(str(cache_dir)) / f"{kind}s"

    def fetch(self, character: str | None) -> Greeting:
        """The greeting (or filler) for ``character``, None: the server's default (blocking: call it in a thread)."""
        try:
            listing = self._client.characters()
        except ServerError as err:
            _LOGGER.warning("%s for %s: %s", self._kind, character, err)
            return Greeting()
        character = character or str(listing.get("default") or "")
        entries = listing.get("characters")
        entry = next((c for c in entries or [] if isinstance(c, dict) and c.get("id") == character), None)
        if entry is None:
            _LOGGER.info("%s: the server has no character %r", self._kind, character)
            return Greeting(known=False)
        path = self._path(character, {"engine": listing.get("engine"), **entry})
        if path.is_file():
            try:
                pcm, rate = read_wav_pcm16(str(path))
                return Greeting(pcm=pcm, sample_rate=rate)
            except Exception as err:  # a damaged file is fetched again, not fatal
                _LOGGER.warning("cached %s %s unreadable (%s); fetching again", self._kind, path, err)
        try:
            wav = self._download(character)
            pcm, rate = read_wav_pcm16(wav)
        except ServerRejected as err:
            if err.status == 404:
                return Greeting(known=False)
            _LOGGER.warning("%s for %s refused: %s", self._kind, character, err)
            return Greeting()
        except ServerError as err:
            _LOGGER.warning("%s for %s: %s", self._kind, character, err)
            return Greeting()
        except Exception as err:  # not a WAV: speak with the phone's own voice instead
            _LOGGER.warning("%s for %s unusable: %s", self._kind, character, err)
            return Greeting()
        self._store(path, pcm, rate)
        return Greeting(pcm=pcm, sample_rate=rate)

    def _path(self, character: str, about: dict[str, object]) -> Path:
        digest = hashlib.sha256(json.dumps(about, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return self._dir / f"{_SAFE.sub('_', character)}-{digest}.wav"

    def _store(self, path: Path, pcm: bytes, rate: int) -> None:
        """Write atomically, then drop the character's greetings in voices it no longer has."""
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            atomic_write(path, wav_header(rate, data_bytes=len(pcm)) + pcm)
            prefix = path.name.rsplit("-", 1)[0] + "-"
            for old in self._dir.glob(f"{prefix}*.wav"):
                if old != path and old.name.rsplit("-", 1)[0] + "-" == prefix:
                    old.unlink(missing_ok=True)
        except OSError as err:
            _LOGGER.warning("cannot cache the %s in %s: %s", self._kind, self._dir, err)
