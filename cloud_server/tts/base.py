"""The TTS seam: ``synthesize(text, voice) -> iterator of PCM16 chunks`` at the engine's rate."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass


class TTSError(RuntimeError):
    """Synthesis of one piece of text failed; the engine itself stays usable."""


@dataclass(frozen=True)
class VoiceSpec:
    """Who speaks and how: a reference clip plus Chatterbox's expressive knobs."""

    voice_id: str = "default"
    """Stable name for logs and cache keys."""
    clip: str | None = None
    """Reference WAV path; None is the engine's built-in voice."""
    exaggeration: float = 0.5
    """Emotion exaggeration (Chatterbox standard only)."""
    cfg_weight: float = 0.5
    """Classifier-free guidance weight (Chatterbox standard only)."""
    temperature: float = 0.8
    """Sampling temperature."""
    max_tokens: int | None = None
    """Most speech tokens one sentence may use (Chatterbox; 25 a second); None: the engine's own budget."""


@dataclass(frozen=True)
class EngineStatus:
    """What /health says about the voice: read only through ``TTSEngine.status()``, which wrappers delegate."""

    name: str
    device: str = "cpu"
    """Where the model runs ("cuda" or "cpu")."""
    degraded: bool = False
    reason: str | None = None
    """Why it is degraded (the preferred engine could not load, or keeps failing)."""
    resident: bool = True
    """Whether the model is in memory now (False after an idle unload)."""


class TTSEngine(ABC):
    """One loaded voice model. Implementations serialize their own model access."""

    name: str = "tts"
    sample_rate: int = 24000
    device: str = "cpu"
    """Where the model runs ("cuda" or "cpu"), for /health."""
    degraded: bool = False
    """True when this engine stands in for the preferred one, which could not load (for /health)."""
    degraded_reason: str | None = None
    """Why the preferred engine could not load, when degraded."""

    @abstractmethod
    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """Speak ``text``: mono PCM16 little-endian chunks at ``self.sample_rate``; raise TTSError."""

    def status(self) -> EngineStatus:
        """Name, device, degraded and why, resident. Wrappers delegate this to the engine they wrap."""
        return EngineStatus(self.name, self.device, self.degraded, self.degraded_reason, True)

    def prepare_voice(self, voice: VoiceSpec) -> None:
        """Compute and cache whatever the voice needs ahead of the first request (default: nothing)."""
        return None

    def close(self) -> None:
        """Release the model (default: nothing)."""
        return None
