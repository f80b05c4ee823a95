"""One sentence handed to the T3 batch decoder (t3_batch.py), and the decoder's counters."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from cloud_server.tts.chatterbox_stream import SPEECH_VOCAB
from cloud_server.tts.handoff import Handoff
from cloud_server.tts.t3_sequence import T3Sequence


@dataclass
class T3Job(Handoff):
    """One sentence handed to the decoder, and where its tokens and its end go."""

    sequence: T3Sequence
    on_token: Callable[[int], None]
    """Called on the decoder thread with each sampled token (must be quick and must not raise)."""
    check: Callable[[], None]
    """Raises to take the sequence out (hang-up, deadline); what it raises is the caller's result."""
    first_window: int = 0
    """Tokens the caller needs for its first audio (its first stream window)."""
    first_audio: threading.Event | None = None
    """Set by the caller once its first audio is made (or it gave up); None: not waited for."""

    def has_first_window(self) -> bool:
        """Whether the caller has the tokens of its first audio (start/stop tokens make no audio)."""
        return sum(1 for token in self.sequence.sampled if 0 <= token < SPEECH_VOCAB) >= self.first_window


@dataclass
class BatchStats:
    """Counters for /health-style reporting and the benchmark."""

    steps: int = 0
    rows_stepped: int = 0
    tokens: int = 0
    step_seconds: float = 0.0
    prefill_seconds: float = 0.0
    prefill_groups: int = 0
    prefill_chunks: int = 0
    largest_prefill: int = 0
    largest_batch: int = 0
    hold_seconds: float = 0.0
