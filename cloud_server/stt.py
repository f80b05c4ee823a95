"""Server-side speech to text for /process-audio: one faster-whisper model, loaded once, used under a lock."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from common.config import ServerSTTConfig
from common.whisper import load_whisper

_LOGGER = logging.getLogger(__name__)


def pick_device(configured: str, cuda_devices: int) -> str:
    """``auto`` means CUDA when CTranslate2 sees a GPU, else CPU."""
    if configured != "auto":
        return configured
    return "cuda" if cuda_devices > 0 else "cpu"


def pick_compute_type(configured: str, device: str) -> str:
    """``default`` means int8 on CPU and float16 on a GPU."""
    if configured != "default":
        return configured
    return "float16" if device == "cuda" else "int8"


class ServerTranscriber:
    """``transcribe(samples_16k) -> text`` with faster-whisper; thread-safe, model loaded once."""

    def __init__(self, cfg: ServerSTTConfig) -> None:
        self._cfg = cfg
        self._lock = threading.Lock()
        self._model: Any = None
        self.device = ""
        self.compute_type = ""

    def load(self) -> None:
        """Load the model now (at start-up) rather than on the first request."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        import ctranslate2

        self.device = pick_device(self._cfg.device, ctranslate2.get_cuda_device_count())
        self.compute_type = pick_compute_type(self._cfg.compute_type, self.device)
        self._model = load_whisper(
            self._cfg.model, device=self.device, compute_type=self.compute_type, setting="server.stt.model"
        )

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    def transcribe(self, samples_16k: np.ndarray) -> str:
        """Mono float32 at 16 kHz to text (empty for silence)."""
        audio = np.asarray(samples_16k, dtype=np.float32).reshape(-1)
        with self._lock:
            self._load_locked()
            started = time.monotonic()
            segments, _info = self._model.transcribe(
                audio, language=self._cfg.language, beam_size=self._cfg.beam_size, condition_on_previous_text=False
            )
            # The segments generator does the work: consume it inside the lock.
            text = " ".join(seg.text.strip() for seg in segments).strip()
        _LOGGER.info("transcribed %.1f s of audio in %.2f s", audio.size / 16000, time.monotonic() - started)
        return text
