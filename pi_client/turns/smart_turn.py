"""Smart Turn v3.2: has the caller finished speaking, judged from the sound of the turn (not only silence).

The model (8 MB ONNX, Whisper-tiny encoder + classifier) and its numpy feature code ship inside the
``pipecat-ai`` wheel, installed ``--no-deps`` on the Pi. Importing the ``pipecat`` package would
need loguru and more (and patches ``asyncio.wait_for``), so the feature module is loaded by file
path from the installed wheel and the model is run here with onnxruntime.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from common.config import SmartTurnConfig, expand_path
from common.wav import pcm16_to_float

_LOGGER = logging.getLogger(__name__)

MODEL_SECONDS = 8
"""The model hears at most the last 8 s of the turn, left-padded with silence (as pipecat does)."""
_SAMPLE_RATE = 16000
_PACKAGE_DIR = ("audio", "turn", "smart_turn")
_MODEL_NAME = "smart-turn-v3.2-cpu.onnx"


class TurnDetectorError(RuntimeError):
    """Smart Turn cannot be loaded; the message names the setting or the package."""


class TurnDetector(Protocol):
    """Decides whether a turn that has just gone quiet is finished."""

    def is_finished(self, pcm16_16k: bytes) -> tuple[bool, float]:
        """(finished, probability of finished) for the turn's audio so far; blocking."""
        ...


def _pipecat_smart_turn_dir() -> str:
    """Folder of Smart Turn inside the installed pipecat-ai, found without importing pipecat."""
    spec = importlib.util.find_spec("pipecat")  # a top-level find_spec does not run pipecat/__init__.py
    if spec is None or not spec.submodule_search_locations:
        raise TurnDetectorError(
            "pi.turns.smart_turn: pipecat-ai is not installed (pip install --no-deps pipecat-ai==1.14.0)"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], *_PACKAGE_DIR)


def _load_features_module() -> ModuleType:
    """pipecat's numpy-only Whisper log-mel features, loaded by file path (numpy is all it imports)."""
    path = os.path.join(_pipecat_smart_turn_dir(), "_whisper_features.py")
    spec = importlib.util.spec_from_file_location("ai_telephone_smart_turn_features", path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise TurnDetectorError(f"pi.turns.smart_turn: Smart Turn feature code not found at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_model_path() -> str:
    """The Smart Turn v3.2 ONNX file packaged in pipecat-ai."""
    return os.path.join(_pipecat_smart_turn_dir(), "data", _MODEL_NAME)


def last_seconds_padded(audio: np.ndarray, seconds: int = MODEL_SECONDS) -> np.ndarray:
    """The last ``seconds`` of 16 kHz audio; shorter audio is padded with zeros at the start."""
    n = seconds * _SAMPLE_RATE
    if audio.size >= n:
        return audio[-n:]
    return np.pad(audio, (n - audio.size, 0))


class SmartTurn:
    """Smart Turn v3.2 on the CPU: one onnxruntime session, loaded once, used under a lock."""

    def __init__(self, cfg: SmartTurnConfig) -> None:
        try:
            import onnxruntime
        except ImportError as err:
            raise TurnDetectorError("pi.turns.smart_turn: needs onnxruntime (see requirements-pi.txt)") from err
        self._features = _load_features_module()
        path = str(expand_path(cfg.model_path)) if cfg.model_path else default_model_path()
        if not os.path.isfile(path):
            raise TurnDetectorError(f"pi.turns.smart_turn.model_path: no model file at {path}")
        opts = onnxruntime.SessionOptions()
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = max(1, min(cfg.threads, 2))  # Whisper and the VAD need the other cores
        opts.log_severity_level = 4
        try:
            self._session: Any = onnxruntime.InferenceSession(
                path, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own kinds for a bad or truncated file
            raise TurnDetectorError(f"pi.turns.smart_turn.model_path: cannot load {path}: {err}") from err
        self.threshold = cfg.threshold
        self._lock = threading.Lock()
        _LOGGER.info("Smart Turn model %s loaded", path)

    def probability(self, pcm16_16k: bytes) -> float:
        """Probability (0-1) that the turn in this 16 kHz PCM16 audio is finished."""
        audio = last_seconds_padded(pcm16_to_float(pcm16_16k))
        features = self._features.compute_whisper_log_mel_features(audio, do_normalize=True)
        with self._lock:
            (logits,) = self._session.run(None, {"input_features": features[np.newaxis].astype(np.float32)})
        return float(np.asarray(logits).reshape(-1)[0])

    def is_finished(self, pcm16_16k: bytes) -> tuple[bool, float]:
        """(probability ≥ threshold, probability); timed at debug level."""
        started = time.perf_counter()
        prob = self.probability(pcm16_16k)
        _LOGGER.debug("Smart Turn: %.3f in %.0f ms", prob, (time.perf_counter() - started) * 1000)
        return prob >= self.threshold, prob


def load_turn_detector(cfg: SmartTurnConfig) -> TurnDetector | None:
    """Smart Turn when enabled and loadable; None (the silence rule) otherwise, with the reason logged."""
    if not cfg.enabled:
        return None
    try:
        return SmartTurn(cfg)
    except TurnDetectorError as err:
        if cfg.model_path:
            raise  # a model the maker named and that cannot load is a setting to fix, not a fallback
        _LOGGER.warning("End of turn by silence only: %s", err)
        return None
