"""A small disk cache of spoken short texts (greetings, apologies, "One moment."), so they are synthesized once.

The key covers everything that changes the sound: the text, the voice clip's *content* (a new
upload under the same name is a new key), the knobs and the model. Entries are WAV files written
atomically; reading one refreshes its mtime, and the oldest go first when over the byte budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloud_server.tts.base import EngineStatus, TTSEngine, VoiceSpec
from common.atomic import atomic_write
from common.config import PhraseCacheConfig
from common.wav import WavFormatError, data_offset, parse_header, wav_header

_LOGGER = logging.getLogger(__name__)
_CHUNK_BYTES = 32768


class PhraseCache:
    """PCM16 audio per (text, voice, model) on disk, bounded in bytes, least recently used evicted."""

    def __init__(self, root: Path, cfg: PhraseCacheConfig) -> None:
        self.root = root
        self._cfg = cfg
        self._lock = threading.Lock()
        self._clip_hashes: dict[tuple[str, int, int], str] = {}
        root.mkdir(parents=True, exist_ok=True)

    def cacheable(self, text: str) -> bool:
        """Only short texts are worth keeping."""
        return self._cfg.enabled and 0 < len(text) <= self._cfg.max_text_chars

    def _clip_hash(self, clip: str | None) -> str:
        if clip is None:
            return "builtin"
        st = os.stat(clip)
        memo = (clip, st.st_mtime_ns, st.st_size)
        if memo not in self._clip_hashes:
            with open(clip, "rb") as fh:
                self._clip_hashes[memo] = hashlib.file_digest(fh, "sha256").hexdigest()
        return self._clip_hashes[memo]

    def key(self, text: str, voice: VoiceSpec, model: str) -> str:
        """The entry name for this text spoken by this voice on this model."""
        material: dict[str, Any] = {
            "text": text,
            "clip": self._clip_hash(voice.clip),
            "exaggeration": voice.exaggeration,
            "cfg_weight": voice.cfg_weight,
            "temperature": voice.temperature,
            "model": model,
        }
        if voice.max_tokens is not None:  # only then: the entries stored before this knob keep their names
            material["max_tokens"] = voice.max_tokens
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()

    def get(self, key: str) -> tuple[bytes, int] | None:
        """(PCM16, sample rate) for a stored entry, or None."""
        path = self.root / f"{key}.wav"
        try:
            data = path.read_bytes()
            offset = data_offset(data[:4096])
            fmt = parse_header(data[:offset])
            os.utime(path)  # mark as recently used
        except FileNotFoundError:
            return None
        except (OSError, WavFormatError) as err:
            _LOGGER.warning("Dropping unreadable phrase cache entry %s: %s", path.name, err)
            path.unlink(missing_ok=True)
            return None
        return data[offset:], fmt.sample_rate

    def put(self, key: str, pcm: bytes, sample_rate: int) -> None:
        """Store an entry, then trim the cache to its byte budget."""
        atomic_write(self.root / f"{key}.wav", wav_header(sample_rate, data_bytes=len(pcm)) + pcm)
        self._evict()

    def _evict(self) -> None:
        with self._lock:
            entries = []
            for path in self.root.glob("*.wav"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime_ns, st.st_size, path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self._cfg.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size
                _LOGGER.debug("Phrase cache evicted %s", path.name)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*.wav"))


class CachingEngine(TTSEngine):
    """Wraps the voice engine: short texts come from the phrase cache when they were spoken before."""

    def __init__(self, engine: TTSEngine, cache: PhraseCache, identity: str) -> None:
        self.engine = engine
        self.cache = cache
        self._identity = identity
        """The engine's descriptor ``cache_identity`` (model and weights): part of every key."""
        self.name = engine.name
        self.sample_rate = engine.sample_rate
        self.hits = 0

    def status(self) -> EngineStatus:
        """Delegated to the wrapped engine."""
        return self.engine.status()

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """Cached audio for a short text spoken before; otherwise the engine's, kept when complete."""
        if not self.cache.cacheable(text):
            yield from self.engine.synthesize(text, voice, cancel)
            return
        try:
            key = self.cache.key(text, voice, self._identity)
        except OSError:  # the clip is unreadable: let the engine report it
            yield from self.engine.synthesize(text, voice, cancel)
            return
        hit = self.cache.get(key)
        if hit is not None and hit[1] == self.sample_rate:
            self.hits += 1
            pcm = hit[0]
            for start in range(0, len(pcm), _CHUNK_BYTES):
                yield pcm[start : start + _CHUNK_BYTES]
            return
        parts: list[bytes] = []
        for chunk in self.engine.synthesize(text, voice, cancel):
            parts.append(chunk)
            yield chunk
        if parts and not (cancel is not None and cancel.is_set()):
            try:
                self.cache.put(key, b"".join(parts), self.sample_rate)
            except OSError as err:  # a full or read-only disk costs time later, nothing else
                _LOGGER.warning("Could not cache a phrase: %s", err)

    def prepare_voice(self, voice: VoiceSpec) -> None:
        """Delegated to the wrapped engine."""
        self.engine.prepare_voice(voice)

    def close(self) -> None:
        """Delegated to the wrapped engine."""
        self.engine.close()
