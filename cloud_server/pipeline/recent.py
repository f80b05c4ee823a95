"""The latest calls, for the console's status tab: a small ring buffer fed by a pipeline listener."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from cloud_server.pipeline.reply import TurnStats


@dataclass(frozen=True)
class RecentTurn:
    """One finished turn as the console shows it."""

    number: int
    """Counts up from 1 since the server started, so the page can tell new turns from old."""
    finished_at: float
    """Wall-clock time (time.time()) the turn ended."""
    character_id: str
    heard: str
    reply: str
    llm_first_token_seconds: float | None
    first_audio_seconds: float | None
    total_seconds: float
    audio_seconds: float
    fallback_sentences: int
    llm_failed: bool
    cancelled: bool


class RecentTurns:
    """The last ``size`` turns, newest first; ``observe`` is a ``ReplyPipeline`` listener."""

    def __init__(self, size: int) -> None:
        self._turns: deque[RecentTurn] = deque(maxlen=max(1, size))
        self._count = 0
        self._lock = threading.Lock()

    def observe(self, stats: TurnStats) -> None:
        """Record a finished turn."""
        with self._lock:
            self._count += 1
            self._turns.appendleft(
                RecentTurn(
                    number=self._count,
                    finished_at=time.time(),
                    character_id=stats.character_id,
                    heard=stats.heard,
                    reply=stats.reply_text,
                    llm_first_token_seconds=stats.llm_first_token_seconds,
                    first_audio_seconds=stats.first_audio_seconds,
                    total_seconds=stats.total_seconds,
                    audio_seconds=stats.audio_seconds,
                    fallback_sentences=stats.fallback_sentences,
                    llm_failed=stats.llm_failed,
                    cancelled=stats.cancelled,
                )
            )

    def latest(self) -> list[RecentTurn]:
        """Newest first."""
        with self._lock:
            return list(self._turns)
