"""The storage seam: keys made from what was spoken, and the three calls a backend answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_server.tts.base import VoiceSpec


class StorageError(RuntimeError):
    """The store cannot be used now (down, misconfigured, refused): a 503 for the caller, nothing half-written."""


@dataclass(frozen=True)
class AudioKey:
    """Which file: the character, the day it was made, and a digest of everything that shapes its sound."""

    character: str
    day: dt.date
    digest: str


@dataclass(frozen=True)
class AudioLink:
    """Where the file can be fetched, and until when (None: as long as it is kept)."""

    url: str
    expires_at: dt.datetime | None


def settings_digest(text: str, voice: VoiceSpec, engine_identity: str, sample_rate: int) -> str:
    """The same text, voice and settings give the same digest, so a repeated request reuses the stored file.

    The reference clip's size and modification time are part of it: a re-uploaded voice makes new files.
    """
    clip: Any = None
    if voice.clip:
        try:
            st = Path(voice.clip).stat()
            clip = [st.st_size, st.st_mtime_ns]
        except OSError:
            clip = None
    identity = {
        "text": text,
        "voice": dataclasses.asdict(voice),
        "clip": clip,
        "engine": engine_identity,
        "rate": sample_rate,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:32]


class AudioStore(ABC):
    """Stored WAV files addressed by :class:`AudioKey`."""

    backend: str = "store"

    @abstractmethod
    def name(self, key: AudioKey) -> str:
        """The backend's name for ``key`` (an S3 object key, or a file name)."""

    @abstractmethod
    def size(self, name: str) -> int | None:
        """Bytes of the stored file, None when there is none; StorageError when the store cannot say."""

    @abstractmethod
    def put(self, name: str, wav: bytes) -> None:
        """Store ``wav`` whole or not at all; StorageError when that fails."""

    @abstractmethod
    def link(self, name: str, *, presigned: bool, expires_in: int, base_url: str) -> AudioLink:
        """A URL for the stored file: presigned for ``expires_in`` seconds, or public."""

    @abstractmethod
    def can_link_publicly(self) -> bool:
        """Whether a public (unsigned) URL is configured."""

    @abstractmethod
    def problems(self) -> list[str]:
        """What stops the store from working now, one sentence each (empty: it works). Used by check and /health."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """What /health shows about the store (cheap: cached by backends that go over the network)."""
