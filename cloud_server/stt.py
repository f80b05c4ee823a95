"""Server-side speech to text for /process-audio: one faster-whisper model, loaded once, used under a lock.

Transcription time is bounded, because the lock serializes every caller behind the slowest one:
the audio is in [-1, 1] (samples like 1e30 made Whisper 25-70× slower, decoding "!!!!" at every
temperature of its fallback), decoding is greedy with no temperature fallback and no timestamps,
each 30 s window yields at most ``MAX_NEW_TOKENS`` tokens, and a caller waits at most
``wait_seconds`` for the lock (TranscriberBusy, which the route answers with 503).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from common.config import ServerSTTConfig
from common.whisper import load_whisper

_LOGGER = logging.getLogger(__name__)
MAX_NEW_TOKENS = 192
"""Tokens per 30 s window: fast speech is about 130, so this only cuts hallucinated loops."""


class TranscriberBusy(RuntimeError):
    """Whisper stayed busy with other callers longer than this caller may wait."""


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

    def transcribe(self, samples_16k: np.ndarray, wait_seconds: float | None = None) -> str:
        """Mono float32 at 16 kHz to text (empty for silence); TranscriberBusy after ``wait_seconds`` (None: wait)."""
        audio = _full_scale(np.asarray(samples_16k, dtype=np.float32).reshape(-1))
        if not self._lock.acquire(timeout=-1 if wait_seconds is None else max(wait_seconds, 0.0)):
            raise TranscriberBusy(f"Whisper was busy for {wait_seconds:g} s")
        try:
            self._load_locked()
            started = time.monotonic()
            segments, _info = self._model.transcribe(
                audio,
                language=self._cfg.language,
                beam_size=self._cfg.beam_size,
                condition_on_previous_text=False,
                temperature=0.0,
                without_timestamps=True,
                max_new_tokens=MAX_NEW_TOKENS,
            )
            # The segments generator does the work: consume it inside the lock.
            text = " ".join(seg.text.strip() for seg in segments).strip()
        finally:
            self._lock.release()
        _LOGGER.info("transcribed %.1f s of audio in %.2f s", audio.size / 16000, time.monotonic() - started)
        return text


def _full_scale(audio: np.ndarray) -> np.ndarray:
    """Audio in [-1, 1]: non-finite samples silenced, louder audio scaled down (the decoder does this too)."""
    audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio / np.float32(peak) if peak > 1.0 else audio
