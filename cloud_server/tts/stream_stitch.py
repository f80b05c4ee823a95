"""Streaming inside a sentence, the pure parts: when to vocode the next window of speech tokens, and
how to join the windows' audio so the seams cannot be heard.

S3Gen turns speech tokens into audio (960 samples per token at 24 kHz). Vocoding a growing
sentence window by window, each window starts ``context`` tokens before the new ones (so the
flow model sees what came before) and the last ``holdback`` tokens of every window but the final
one are held back: their sound depends on tokens not generated yet (S3Gen looks 3 tokens ahead).
The next window renders them again with that lookahead, and the held-back audio is cross-faded
into the new render from the exact sample where output stopped, so the stream stays continuous.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CROSSFADE_SAMPLES = 480
"""20 ms at 24 kHz: the old render of the held-back audio fades into the new one over this span."""


@dataclass(frozen=True)
class StreamPlan:
    """Window sizes, in speech tokens (25 per second of speech)."""

    first_chunk_tokens: int = 10
    chunk_tokens: int = 25
    context_tokens: int = 8
    holdback_tokens: int = 3
    samples_per_token: int = 960

    def __post_init__(self) -> None:
        if self.holdback_tokens < 0 or self.holdback_tokens >= min(self.first_chunk_tokens, self.chunk_tokens):
            raise ValueError("stream_holdback_tokens must be smaller than the chunk sizes")
        if self.context_tokens < self.holdback_tokens + 2:
            # S3Gen fades in the first 40 ms of every render: the context must cover it plus the held-back audio.
            raise ValueError("stream_context_tokens must exceed stream_holdback_tokens by at least 2")


def next_window_end(covered: int, available: int, finished: bool, plan: StreamPlan) -> int | None:
    """How many tokens the next window should reach, or None to wait for T3.

    ``covered`` tokens were vocoded already, ``available`` exist now; ``finished`` when T3 is done.
    A window takes everything available once it holds a full chunk (T3 may run ahead on a GPU).
    """
    if finished:
        return available if available > covered else None
    wanted = covered + (plan.first_chunk_tokens if covered == 0 else plan.chunk_tokens)
    return available if available >= wanted else None


def window_start(covered: int, plan: StreamPlan) -> int:
    """The first token of the next window: ``context`` tokens before the new ones."""
    return max(0, covered - plan.context_tokens)


class Stitcher:
    """Joins the audio of overlapping windows into one continuous stream of samples."""

    def __init__(self, plan: StreamPlan) -> None:
        self._plan = plan
        self._emitted = 0  # samples handed out so far
        self._held = np.zeros(0, dtype=np.float32)  # the last render from _emitted on, not handed out yet

    @property
    def emitted_samples(self) -> int:
        """Samples handed out so far."""
        return self._emitted

    def add(self, audio: np.ndarray, first_token: int, final: bool) -> np.ndarray:
        """The samples ready to play, given one window's audio starting at token ``first_token``."""
        start = first_token * self._plan.samples_per_token
        if start > self._emitted:
            raise ValueError(f"window starts at sample {start}, after the {self._emitted} already played")
        fresh = np.array(audio[self._emitted - start :], dtype=np.float32)
        fade = min(CROSSFADE_SAMPLES, len(self._held), len(fresh))
        if fade:
            ramp = (1.0 - np.cos(np.linspace(0.0, np.pi, fade, dtype=np.float32))) / 2.0
            fresh[:fade] = self._held[:fade] * (1.0 - ramp) + fresh[:fade] * ramp
        if final:
            ready, self._held = fresh, np.zeros(0, dtype=np.float32)
        else:
            keep = max(0, len(fresh) - self._plan.holdback_tokens * self._plan.samples_per_token)
            ready, self._held = fresh[:keep], fresh[keep:]
        self._emitted += len(ready)
        return ready

    def finish(self) -> np.ndarray:
        """The held-back end, when the last window added turned out to be the last one after all."""
        ready, self._held = self._held, np.zeros(0, dtype=np.float32)
        self._emitted += len(ready)
        return ready
