"""The primary voice's health as callers hear it: degraded after several sentences in a row failed.

A voice model that loaded but fails on every sentence (CUDA out of memory, a broken clip) would
otherwise leave /health saying ok while every caller hears the fallback voice.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Final

from cloud_server.tts.base import EngineStatus, TTSEngine, VoiceSpec

FAILURES_BEFORE_DEGRADED: Final = 3
"""Consecutive failed sentences after which /health says degraded; one success clears it."""


class FailureWatch(TTSEngine):
    """Wraps the primary voice and counts the sentences it failed on in a row."""

    def __init__(self, engine: TTSEngine, threshold: int = FAILURES_BEFORE_DEGRADED) -> None:
        self.engine = engine
        self.name = engine.name
        self.sample_rate = engine.sample_rate
        self._threshold = threshold
        self._lock = threading.Lock()
        self._failures = 0
        self._last_error = ""

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """The wrapped engine's speech; its failures are counted, then raised as they were."""
        try:
            yield from self.engine.synthesize(text, voice, cancel)
        except Exception as err:
            with self._lock:
                self._failures += 1
                self._last_error = str(err)
            raise
        with self._lock:
            self._failures = 0

    def status(self) -> EngineStatus:
        """The wrapped engine's status, degraded while it keeps failing."""
        inner = self.engine.status()
        with self._lock:
            failures, last = self._failures, self._last_error
        if failures < self._threshold or inner.degraded:
            return inner
        return dataclasses.replace(inner, degraded=True, reason=f"{failures} sentences in a row failed: {last}")

    def prepare_voice(self, voice: VoiceSpec) -> None:
        """Delegated to the wrapped engine."""
        self.engine.prepare_voice(voice)

    def close(self) -> None:
        """Delegated to the wrapped engine."""
        self.engine.close()
