"""The phone's own voice: greeting and apologies, rendered once and cached on disk.

Lifting the handset must sound instant, and the apology must work exactly when the network
does not, so every phrase is synthesized ahead of time (Piper with the packaged voice,
espeak-ng when Piper is missing; see :mod:`common.speech`) and kept as a WAV under
``pi.cache_dir``, keyed by the text and the voice. With a warm cache the voice is never loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_path
from common.config import OfflineVoiceConfig, expand_path
from common.wav import read_wav_pcm16, write_wav
from pi_client.call.machine import Phrase

_LOGGER = logging.getLogger(__name__)

_CACHE_VERSION = "1"
"""Bump when the rendering changes so old cache files are not reused."""


@dataclass(frozen=True)
class SpokenPhrase:
    """A phrase ready to play."""

    text: str
    sample_rate: int
    pcm: bytes

    @property
    def seconds(self) -> float:
        """Its length in seconds."""
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0


def _default_voice_factory(piper_voice: str | None) -> Any:
    from common.speech import open_local_voice

    return open_local_voice(piper_voice)


class OfflineVoice:
    """Greeting, offline message and broken-line message in the phone's own voice."""

    def __init__(
        self,
        cfg: OfflineVoiceConfig,
        greeting: str,
        cache_dir: str | os.PathLike[str],
        voice_factory: Callable[[str | None], Any] = _default_voice_factory,
    ) -> None:
        self._texts = {
            Phrase.GREETING: greeting,
            Phrase.OFFLINE: cfg.message,
            Phrase.BROKEN: cfg.broken_message,
            Phrase.NOT_IN_SERVICE: cfg.not_in_service_message,
            Phrase.STILL_THERE: cfg.still_there_message,
        }
        self._piper_voice = cfg.piper_voice
        self._cache_dir = expand_path(str(cache_dir))
        self._voice_factory = voice_factory
        self._voice: Any = None
        self._phrases: dict[Phrase, SpokenPhrase] = {}

    def prepare(self) -> None:
        """Render (or load from the cache) every phrase; blocking, call it at start-up in a thread."""
        for phrase in Phrase:
            self.phrase(phrase)

    def phrase(self, phrase: Phrase) -> SpokenPhrase:
        """The audio for ``phrase`` (memory, then disk cache, then synthesized and cached)."""
        spoken = self._phrases.get(phrase)
        if spoken is None:
            spoken = self._load_or_render(self._texts[phrase])
            self._phrases[phrase] = spoken
        return spoken

    def cache_path(self, text: str) -> Path:
        """Where the audio for ``text`` in the configured voice is cached."""
        key = "\0".join((_CACHE_VERSION, self._voice_identity(), text))
        return self._cache_dir / f"phrase-{hashlib.sha256(key.encode()).hexdigest()[:24]}.wav"

    def _voice_identity(self) -> str:
        if not self._piper_voice:
            return "packaged"
        path = expand_path(self._piper_voice)
        try:
            stat = path.stat()
        except OSError:
            return str(path)
        return f"{path}:{stat.st_size}:{int(stat.st_mtime)}"

    def _load_or_render(self, text: str) -> SpokenPhrase:
        path = self.cache_path(text)
        if path.is_file():
            try:
                pcm, rate = read_wav_pcm16(str(path))
                return SpokenPhrase(text, rate, pcm)
            except Exception as err:  # a damaged cache file is re-rendered, not fatal
                _LOGGER.warning("cached phrase %s unreadable (%s); rendering again", path, err)
        spoken = self._render(text)
        try:
            with atomic_path(path) as tmp:
                write_wav(str(tmp), spoken.pcm, spoken.sample_rate)
        except OSError as err:
            _LOGGER.warning("cannot cache phrase in %s: %s", self._cache_dir, err)
        return spoken

    def _render(self, text: str) -> SpokenPhrase:
        if self._voice is None:
            self._voice = self._voice_factory(self._piper_voice)
            _LOGGER.info("offline voice: %s", getattr(self._voice, "name", "?"))
        pcm = b"".join(self._voice.synthesize(text))
        return SpokenPhrase(text, int(self._voice.sample_rate), pcm)
