"""The voice library: uploaded reference clips under ``server.data_dir``, and which character uses which.

Clips are stored decoded and re-encoded as mono 16-bit WAV (``<id>.wav``), so every engine reads
them the same way whatever was uploaded. Ids are checked against one strict pattern before they
touch the filesystem. Character → voice overrides live in one small JSON file, written atomically,
so ``POST /characters/<id>/voice`` survives a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloud_server.audio_codec import BadAudio, decode_audio
from common.atomic import atomic_write
from common.config import VoiceLibraryConfig
from common.wav import float_to_pcm16, wav_header

_LOGGER = logging.getLogger(__name__)

VOICE_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TURBO_MIN_CLIP_SECONDS: Final = 5.0
"""Chatterbox Turbo asserts its reference clip is longer than this."""
_OVERRIDES_FILE: Final = "character_voices.json"


class VoiceError(ValueError):
    """A voice library request that cannot be done; ``status`` is the HTTP status it maps to."""

    status = 400
    code = "bad_voice"


class BadVoiceId(VoiceError):
    """The id could be a path trick or is not a plain name."""

    code = "bad_voice_id"


class UnknownVoice(VoiceError):
    """No voice with that id."""

    status = 404
    code = "unknown_voice"


class VoiceInUse(VoiceError):
    """A character still speaks with this voice."""

    status = 409
    code = "voice_in_use"


def check_voice_id(voice_id: object) -> str:
    """The id itself when it is a plain lowercase name (letters, digits, ``-``, ``_``; ≤ 64)."""
    if not isinstance(voice_id, str) or not VOICE_ID.fullmatch(voice_id):
        raise BadVoiceId(
            "A voice id is 1-64 characters: lowercase letters, digits, '-' or '_', starting with a letter or digit."
        )
    return voice_id


@dataclass(frozen=True)
class VoiceInfo:
    """One stored voice clip."""

    voice_id: str
    path: Path
    seconds: float
    sample_rate: int
    sha256: str

    def as_json(self) -> dict[str, object]:
        """The listing entry (no server paths)."""
        return {
            "id": self.voice_id,
            "seconds": round(self.seconds, 2),
            "sample_rate": self.sample_rate,
            "sha256": self.sha256,
        }


class VoiceLibrary:
    """Uploaded reference clips on disk; safe to use from several request threads."""

    def __init__(self, root: Path, cfg: VoiceLibraryConfig, model: str = "standard") -> None:
        self.root = root
        self._cfg = cfg
        self._turbo = model == "turbo"
        self.min_seconds = max(cfg.min_seconds, TURBO_MIN_CLIP_SECONDS) if self._turbo else cfg.min_seconds
        """Shortest clip the active voice model accepts, in seconds."""
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    def path(self, voice_id: str) -> Path:
        """The stored clip of ``voice_id``; UnknownVoice when there is none."""
        path = self.root / f"{check_voice_id(voice_id)}.wav"
        if not path.is_file():
            raise UnknownVoice(f"No voice named {voice_id!r}.")
        return path

    def __contains__(self, voice_id: object) -> bool:
        return isinstance(voice_id, str) and bool(VOICE_ID.fullmatch(voice_id)) and self._file(voice_id).is_file()

    def _file(self, voice_id: str) -> Path:
        return self.root / f"{voice_id}.wav"

    def info(self, voice_id: str) -> VoiceInfo:
        """Length, rate and content hash of one stored clip."""
        import soundfile as sf

        path = self.path(voice_id)
        data = path.read_bytes()
        meta = sf.info(path)
        digest = hashlib.sha256(data).hexdigest()
        return VoiceInfo(voice_id, path, meta.frames / meta.samplerate, meta.samplerate, digest)

    def list(self) -> list[VoiceInfo]:
        """Every stored voice, by id."""
        found = []
        for path in sorted(self.root.glob("*.wav")):
            if VOICE_ID.fullmatch(path.stem):
                try:
                    found.append(self.info(path.stem))
                except (OSError, RuntimeError) as err:
                    _LOGGER.warning("Skipping unreadable voice clip %s: %s", path.name, err)
        return found

    def add(self, voice_id: str, data: bytes) -> tuple[VoiceInfo, bool]:
        """Validate and store an uploaded clip; returns its info and whether the stored clip changed."""
        check_voice_id(voice_id)
        audio = decode_audio(
            data,
            max_bytes=self._cfg.max_upload_bytes,
            max_seconds=self._cfg.max_seconds,
            target_rate=None,
        )
        if audio.duration < self.min_seconds or (self._turbo and audio.duration <= TURBO_MIN_CLIP_SECONDS):
            raise BadAudio(
                f"The clip is {audio.duration:.1f} s long; this voice model needs more than {self.min_seconds:g} s."
            )
        peak = float(abs(audio.samples).max())
        if peak < 1e-3:
            raise BadAudio("The clip is silent; upload a recording of the voice.")
        pcm = float_to_pcm16(audio.samples)
        wav = wav_header(audio.sample_rate, data_bytes=len(pcm)) + pcm
        path = self.root / f"{voice_id}.wav"
        with self._lock:
            changed = not path.is_file() or path.read_bytes() != wav
            if changed:
                atomic_write(path, wav)
        _LOGGER.info(
            "Voice %s stored (%.1f s, %d Hz, changed=%s)", voice_id, audio.duration, audio.sample_rate, changed
        )
        info = VoiceInfo(voice_id, path, audio.duration, audio.sample_rate, hashlib.sha256(wav).hexdigest())
        return info, changed

    def delete(self, voice_id: str) -> None:
        """Remove a stored clip; UnknownVoice when there is none."""
        with self._lock:
            self.path(voice_id).unlink()
        _LOGGER.info("Voice %s deleted", voice_id)


class VoiceOverrides:
    """Which library voice each character speaks with, set at runtime and kept across restarts."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._map: dict[str, str] = self._read()

    def _read(self) -> dict[str, str]:
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            _LOGGER.warning("Ignoring unreadable voice overrides %s: %s", self._path, err)
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): v for k, v in raw.items() if isinstance(v, str) and VOICE_ID.fullmatch(v)}

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> VoiceOverrides:
        """The overrides file under the server's data directory."""
        return cls(data_dir / _OVERRIDES_FILE)

    def get(self, character_id: str) -> str | None:
        """The library voice a character uses now, or None for its configured clip."""
        with self._lock:
            return self._map.get(character_id)

    def set(self, character_id: str, voice_id: str | None) -> None:
        """Point a character at a library voice (None: back to its configured clip), persisted at once."""
        with self._lock:
            updated = dict(self._map)
            if voice_id is None:
                updated.pop(character_id, None)
            else:
                updated[character_id] = check_voice_id(voice_id)
            atomic_write(self._path, json.dumps(updated, indent=2, sort_keys=True).encode("utf-8"))
            self._map = updated

    def users_of(self, voice_id: str) -> list[str]:
        """Characters currently pointed at ``voice_id``."""
        with self._lock:
            return sorted(c for c, v in self._map.items() if v == voice_id)

    def all(self) -> dict[str, str]:
        """A copy of every override."""
        with self._lock:
            return dict(self._map)
