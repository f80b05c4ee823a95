"""The voice library: uploaded reference clips under ``server.data_dir``, and which character uses which.

Clips are stored decoded and re-encoded as mono 16-bit WAV at one rate (``<id>.wav``, 24 kHz), so
every engine reads them the same way whatever was uploaded, and the count and total size are capped
(``server.voices``). Ids are checked against one strict pattern before they
touch the filesystem. Character → voice overrides live in one small JSON file, written atomically,
so ``POST /characters/<id>/voice`` survives a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloud_server.audio_codec import BadAudio, decode_audio
from common.atomic import atomic_write
from common.config import VoiceLibraryConfig
from common.wav import float_to_pcm16, wav_header

_LOGGER = logging.getLogger(__name__)

VOICE_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
STORAGE_RATE: Final = 24000
"""Every clip is stored at 24 kHz, whatever rate it was uploaded at. Chatterbox reads a reference
at 24 kHz (S3Gen) and at 16 kHz resampled from that (tokenizer, speaker encoder), and the OpenAI
route speaks at 24 kHz: nothing a voice model uses is lost, and a clip costs at most
``max_seconds`` × 48 KB on disk."""
_OVERRIDES_FILE: Final = "character_voices.json"
_INDEX_FILE: Final = "index.json"


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


class LibraryFull(VoiceError):
    """One more clip would pass ``server.voices.max_voices`` or ``max_total_bytes``."""

    status = 409
    code = "library_full"


class UnusableVoice(VoiceError):
    """The clip decoded, but the voice model could not prepare it."""

    code = "unusable_voice"


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


@dataclass(frozen=True)
class StoredVoice:
    """The outcome of an upload."""

    info: VoiceInfo
    changed: bool
    """The stored clip differs from what was there before."""
    created: bool
    """There was no voice with this id before."""


@dataclass(frozen=True)
class _Entry:
    """An index entry: the clip's info and the file state it was computed from."""

    info: VoiceInfo
    size: int
    mtime_ns: int

    def as_json(self) -> dict[str, object]:
        return {
            "seconds": self.info.seconds,
            "sample_rate": self.info.sample_rate,
            "sha256": self.info.sha256,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
        }


class VoiceLibrary:
    """Uploaded reference clips on disk; safe to use from several request threads.

    Every change (upload, delete, a character switching voice) happens under ``lock``, so the
    "voice in use" check and the change it guards cannot interleave with another request's.
    Hashes and lengths live in ``index.json`` next to the clips: a listing stats the files and
    reads a clip again only when its size or mtime changed (a crash between writing a clip and
    the index, or a clip copied in by hand).
    """

    def __init__(self, root: Path, cfg: VoiceLibraryConfig, clip_longer_than: float = 0.0) -> None:
        self.root = root
        self._cfg = cfg
        self._floor = clip_longer_than
        """The voice model's own floor (its descriptor's ``clip_longer_than``): clips must be longer."""
        self.min_seconds = max(cfg.min_seconds, clip_longer_than)
        """Shortest clip the active voice model accepts, in seconds."""
        self.lock = threading.RLock()
        """Held for every change to the library or to which character uses which voice."""
        root.mkdir(parents=True, exist_ok=True)
        self._index_path = root / _INDEX_FILE
        self._entries = self._read_index()

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
        self.path(voice_id)
        for info in self.list():
            if info.voice_id == voice_id:
                return info
        raise UnknownVoice(f"No voice named {voice_id!r}.")

    def list(self) -> list[VoiceInfo]:
        """Every stored voice, by id (from the index; a clip is read only when it changed on disk)."""
        with self.lock:
            self._reconcile()
            return [self._entries[v].info for v in sorted(self._entries)]

    def add(self, voice_id: str, data: bytes, verify: Callable[[], None] | None = None) -> StoredVoice:
        """Validate and store an uploaded clip at STORAGE_RATE.

        ``verify`` runs under the lock once the clip is in place (the voice model preparing it);
        when it raises, the library goes back to exactly what it held before and UnusableVoice
        is raised, so a failed upload never removes or replaces a concurrent successful one.
        """
        check_voice_id(voice_id)
        audio = decode_audio(
            data,
            max_bytes=self._cfg.max_upload_bytes,
            max_seconds=self._cfg.max_seconds,
            target_rate=STORAGE_RATE,
        )
        if audio.duration < self.min_seconds or (self._floor and audio.duration <= self._floor):
            raise BadAudio(
                f"The clip is {audio.duration:.1f} s long; this voice model needs more than {self.min_seconds:g} s."
            )
        peak = float(abs(audio.samples).max())
        if peak < 1e-3:
            raise BadAudio("The clip is silent; upload a recording of the voice.")
        pcm = float_to_pcm16(audio.samples)
        wav = wav_header(audio.sample_rate, data_bytes=len(pcm)) + pcm
        path = self._file(voice_id)
        with self.lock:
            self._reconcile()
            previous = path.read_bytes() if path.is_file() else None
            self._check_room(voice_id, len(wav), previous)
            changed = previous != wav
            if changed:
                self._store(voice_id, wav)
            if verify is not None:
                try:
                    verify()
                except Exception as err:
                    _LOGGER.warning("Voice model could not use clip %s: %s", voice_id, err)
                    self._restore(voice_id, previous, changed)
                    raise UnusableVoice(f"The voice model could not use this clip: {err}") from err
            info = self._entries[voice_id].info
        _LOGGER.info(
            "Voice %s stored (%.1f s from %d Hz, changed=%s)", voice_id, audio.duration, audio.source_rate, changed
        )
        return StoredVoice(info, changed, previous is None)

    def delete(self, voice_id: str, users: Callable[[], Sequence[str]] | None = None) -> None:
        """Remove a stored clip; UnknownVoice when there is none, VoiceInUse when ``users()`` names any."""
        with self.lock:
            path = self.path(voice_id)
            using = users() if users is not None else []
            if using:
                raise VoiceInUse(f"{voice_id!r} is in use by {', '.join(using)}; switch them to another voice first.")
            path.unlink()
            self._entries.pop(voice_id, None)
            self._write_index()
        _LOGGER.info("Voice %s deleted", voice_id)

    # ----------------------------------------------------------------- under the lock

    def _check_room(self, voice_id: str, size: int, previous: bytes | None) -> None:
        """LibraryFull when one more clip, or these bytes, would pass the configured caps."""
        if previous is None and len(self._entries) >= self._cfg.max_voices:
            raise LibraryFull(f"The library holds {len(self._entries)} voices, the most it keeps; delete one first.")
        total = sum(e.size for v, e in self._entries.items() if v != voice_id) + size
        if total > self._cfg.max_total_bytes:
            raise LibraryFull(
                f"Storing this clip would use {total} bytes; the library's budget is {self._cfg.max_total_bytes} bytes."
                " Delete a voice first."
            )

    def _store(self, voice_id: str, wav: bytes) -> None:
        path = self._file(voice_id)
        atomic_write(path, wav)
        self._entries[voice_id] = _entry_for(voice_id, path, wav)
        self._write_index()

    def _restore(self, voice_id: str, previous: bytes | None, changed: bool) -> None:
        """Undo this request's write: the earlier clip back, or no clip at all."""
        if previous is None:
            self._file(voice_id).unlink(missing_ok=True)
            self._entries.pop(voice_id, None)
            self._write_index()
        elif changed:
            self._store(voice_id, previous)

    def _reconcile(self) -> None:
        """Bring the index in line with the clips on disk (cheap: one stat per clip)."""
        seen: dict[str, _Entry] = {}
        for path in sorted(self.root.glob("*.wav")):
            voice_id = path.stem
            if not VOICE_ID.fullmatch(voice_id):
                continue
            try:
                stat = path.stat()
                known = self._entries.get(voice_id)
                if known is not None and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                    seen[voice_id] = known
                else:
                    seen[voice_id] = _entry_for(voice_id, path, path.read_bytes())
            except (OSError, RuntimeError) as err:
                _LOGGER.warning("Skipping unreadable voice clip %s: %s", path.name, err)
        if seen != self._entries:
            self._entries = seen
            self._write_index()

    def _read_index(self) -> dict[str, _Entry]:
        try:
            raw = json.loads(self._index_path.read_text(encoding="utf-8"))
            entries = {
                voice_id: _Entry(
                    VoiceInfo(
                        voice_id,
                        self._file(voice_id),
                        float(e["seconds"]),
                        int(e["sample_rate"]),
                        str(e["sha256"]),
                    ),
                    int(e["size"]),
                    int(e["mtime_ns"]),
                )
                for voice_id, e in raw.items()
                if VOICE_ID.fullmatch(voice_id)
            }
        except FileNotFoundError:
            entries = {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            _LOGGER.warning("Rebuilding the voice index %s: %s", self._index_path, err)
            entries = {}
        return entries

    def _write_index(self) -> None:
        data = {v: e.as_json() for v, e in sorted(self._entries.items())}
        atomic_write(self._index_path, json.dumps(data, indent=1).encode("utf-8"))


def _entry_for(voice_id: str, path: Path, wav: bytes) -> _Entry:
    """Hash and measure a clip just written or read (``wav`` is its content)."""
    import soundfile as sf

    meta = sf.info(path)
    stat = path.stat()
    info = VoiceInfo(voice_id, path, meta.frames / meta.samplerate, meta.samplerate, hashlib.sha256(wav).hexdigest())
    return _Entry(info, stat.st_size, stat.st_mtime_ns)


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
