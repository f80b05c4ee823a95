"""Silero VAD v6 (the ONNX model that ships inside faster-whisper), run frame by frame with its state kept.

faster-whisper's own ``SileroVADModel`` zeroes the LSTM state and the context on every call, which
suits whole files; live endpointing feeds 32 ms at a time, so this class keeps both across calls.
Input per frame: the previous frame's last 64 samples followed by the 512 new ones (float32, 16 kHz).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.wav import SAMPLE_WIDTH

_LOGGER = logging.getLogger(__name__)

FRAME_SAMPLES = 512
"""Samples per frame the model takes at 16 kHz."""
CONTEXT_SAMPLES = 64
"""Samples of the previous frame the model sees before each frame."""
_STATE_SHAPE = (1, 1, 128)


class VadError(RuntimeError):
    """The VAD cannot run (model missing) or was given audio it cannot take."""


def model_path() -> str:
    """Path of the Silero v6 ONNX model inside the installed faster-whisper."""
    from faster_whisper.utils import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


class SileroVad:
    """Speech probability per 512-sample frame; one instance per listener, safe to call from a worker thread."""

    def __init__(self, path: str | None = None) -> None:
        path = path or model_path()
        try:
            import onnxruntime
        except ImportError as err:
            raise VadError("the VAD needs onnxruntime (pip install -r requirements-pi.txt)") from err
        if not os.path.exists(path):
            raise VadError(f"Silero VAD model not found at {path}")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session: Any = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)
        self._lock = threading.Lock()
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def reset(self) -> None:
        """Forget the audio heard so far (start of a new listening turn)."""
        with self._lock:
            self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
            self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
            self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def speech_probability(self, frame: bytes) -> float:
        """Probability (0-1) that this 512-sample PCM16 frame, following the previous ones, is speech."""
        return self.speech_probabilities([frame])[0]

    def speech_probabilities(self, frames: Sequence[bytes]) -> list[float]:
        """Probabilities for consecutive frames, in one model call (the model runs them in sequence)."""
        if not frames:
            return []
        for frame in frames:
            if len(frame) != FRAME_SAMPLES * SAMPLE_WIDTH:
                raise VadError(f"VAD frames must be {FRAME_SAMPLES} samples of PCM16, got {len(frame)} bytes")
        audio = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float32) / 32768.0
        batch = audio.reshape(len(frames), FRAME_SAMPLES)
        with self._lock:
            contexts = np.concatenate([self._context[None, :], batch[:-1, -CONTEXT_SAMPLES:]], axis=0)
            model_input = np.ascontiguousarray(np.concatenate([contexts, batch], axis=1))
            probs, self._h, self._c = self._session.run(None, {"input": model_input, "h": self._h, "c": self._c})
            self._context = batch[-1, -CONTEXT_SAMPLES:].copy()
        return [float(p) for p in np.asarray(probs).reshape(-1)]
