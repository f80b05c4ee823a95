"""Optional idle unload: give the GPU back after a quiet spell, load the voice model again on the next request.

A rented GPU is often shared with Ollama; a voice model idle for ``tts.idle_unload_seconds`` is
closed and dropped, and the next sentence (or voice preparation) loads a fresh one through the
factory. Chatterbox's conditionals live on disk, so a reload does not recompute them.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from cloud_server.tts.base import EngineStatus, TTSEngine, VoiceSpec
from cloud_server.tts.engines import descriptor
from common.config import TTSConfig

_LOGGER = logging.getLogger(__name__)
_MAX_CHECK_SECONDS = 30.0


class IdleUnloadingEngine(TTSEngine):
    """Wraps the voice engine: unloaded after ``idle_seconds`` without use, rebuilt by ``factory`` on demand."""

    def __init__(
        self,
        engine: TTSEngine,
        factory: Callable[[], TTSEngine],
        idle_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        watch: bool = True,
    ) -> None:
        self._engine: TTSEngine | None = engine
        self._factory = factory
        self.idle_seconds = idle_seconds
        self._clock = clock
        self.name = engine.name
        self.sample_rate = engine.sample_rate
        self._status = engine.status()
        """The engine's last status, kept for /health while it is unloaded; a reload keeps its degradation."""
        self.reloads = 0
        self._lock = threading.Lock()
        self._busy = 0
        self._last_used = clock()
        self._stop = threading.Event()
        if watch:
            period = max(0.05, min(idle_seconds / 4, _MAX_CHECK_SECONDS))
            threading.Thread(target=self._watch, args=(period,), name="tts-idle-unload", daemon=True).start()

    @property
    def model_resident(self) -> bool:
        """Whether the model is in memory now (/health shows it)."""
        return self._engine is not None

    def status(self) -> EngineStatus:
        """The loaded engine's status (its last one while unloaded), with ``resident``."""
        with self._lock:
            engine = self._engine
        if engine is None:
            return dataclasses.replace(self._status, resident=False)
        return self._keep_degradation(engine.status())

    def _keep_degradation(self, fresh: EngineStatus) -> EngineStatus:
        """A reloaded stand-in still stands in for the preferred engine: it stays degraded, with the reason."""
        if self._status.degraded and not fresh.degraded:
            return dataclasses.replace(fresh, degraded=True, reason=self._status.reason)
        return fresh

    def _enter(self) -> TTSEngine:
        with self._lock:
            if self._engine is None:
                started = self._clock()
                self._engine = self._factory()
                self._status = self._keep_degradation(self._engine.status())
                self.reloads += 1
                _LOGGER.info("Voice model reloaded after idle unload in %.1f s", self._clock() - started)
            self._busy += 1
            return self._engine

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last_used = self._clock()

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """The wrapped engine's speech, loading it first when it was unloaded."""
        engine = self._enter()
        try:
            yield from engine.synthesize(text, voice, cancel)
        finally:
            self._leave()

    def prepare_voice(self, voice: VoiceSpec) -> None:
        """Prepare on the loaded engine (loading it when needed)."""
        engine = self._enter()
        try:
            engine.prepare_voice(voice)
        finally:
            self._leave()

    def unload_if_idle(self) -> bool:
        """Drop the model when nothing used it for ``idle_seconds``; True when it was dropped now."""
        with self._lock:
            if self._engine is None or self._busy or self._clock() - self._last_used < self.idle_seconds:
                return False
            engine, self._engine = self._engine, None
        engine.close()
        del engine
        gc.collect()
        torch: Any = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        _LOGGER.info("Voice model unloaded after %.0f s idle", self.idle_seconds)
        return True

    def _watch(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.unload_if_idle()
            except Exception:
                _LOGGER.exception("Idle unload failed; the model stays loaded")

    def close(self) -> None:
        """Stop watching and release the model."""
        self._stop.set()
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()


def reloader(primary: TTSEngine, tts_cfg: TTSConfig) -> Callable[[], TTSEngine]:
    """How to build the primary engine again: its descriptor's loader, at the rate it had."""
    load = descriptor(primary.name).load
    rate = primary.sample_rate

    def reload() -> TTSEngine:
        return load(tts_cfg, rate)

    return reload
