"""Speech to text on the Pi: faster-whisper (CTranslate2, int8, no torch), loaded once at start."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from common.config import PiSTTConfig
from common.wav import pcm16_to_float
from common.whisper import WhisperLoadError, load_whisper

_LOGGER = logging.getLogger(__name__)


TranscriberError = WhisperLoadError
"""The speech-to-text model cannot be loaded; the message names the setting."""


class Transcriber(ABC):
    """Turns one utterance into text."""

    @abstractmethod
    def transcribe(self, pcm: bytes) -> str:
        """Text of 16 kHz mono PCM16 speech ("" when nothing was recognized); blocking."""


class WhisperTranscriber(Transcriber):
    """faster-whisper on the CPU; one model, used under a lock."""

    def __init__(self, cfg: PiSTTConfig) -> None:
        self._cfg = cfg
        self._model: Any = load_whisper(
            cfg.model, device="cpu", compute_type=cfg.compute_type, cpu_threads=cfg.threads, setting="pi.stt.model"
        )
        self._lock = threading.Lock()

    def transcribe(self, pcm: bytes) -> str:
        """Transcribe one endpointed utterance (no second VAD pass: the Pi already found the speech)."""
        audio = pcm16_to_float(pcm)
        if audio.size == 0:
            return ""
        started = time.monotonic()
        with self._lock:
            segments, _info = self._model.transcribe(
                audio,
                language=self._cfg.language,
                beam_size=self._cfg.beam_size,
                vad_filter=False,
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            # segments is a lazy generator: the decoding happens here, inside the lock and the worker thread.
            text = " ".join(segment.text.strip() for segment in segments).strip()
        _LOGGER.info("Transcribed %.2f s of audio in %.2f s: %r", audio.size / 16000, time.monotonic() - started, text)
        return text
