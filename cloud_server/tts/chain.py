"""The fallback voice: local voices in order (Piper, then espeak-ng); a sentence one fails on goes to the next."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

from cloud_server.tts.base import EngineStatus, TTSEngine, TTSError, VoiceSpec

_LOGGER = logging.getLogger(__name__)


class FallbackChain(TTSEngine):
    """Speaks with the first voice that can; all members come out at the chain's rate."""

    def __init__(self, engines: Sequence[TTSEngine]) -> None:
        if not engines:
            raise ValueError("a fallback chain needs at least one voice")
        self.engines = list(engines)
        self.name = self.engines[0].name
        self.sample_rate = self.engines[0].sample_rate

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """The first voice's speech; when it fails before any audio, the next voice speaks the sentence."""
        failures: list[str] = []
        for engine in self.engines:
            spoke = False
            try:
                for pcm in engine.synthesize(text, voice, cancel):
                    spoke = True
                    yield pcm
                return
            except Exception as err:
                if spoke:  # half a sentence is out: a second voice repeating it would be worse
                    raise
                _LOGGER.warning("Fallback voice %s failed on a sentence (%s); trying the next", engine.name, err)
                failures.append(f"{engine.name}: {err}")
        raise TTSError("every fallback voice failed: " + "; ".join(failures))

    def status(self) -> EngineStatus:
        """The first voice's status."""
        return self.engines[0].status()

    def close(self) -> None:
        """Close every voice."""
        for engine in self.engines:
            engine.close()
