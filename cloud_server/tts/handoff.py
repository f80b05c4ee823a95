"""Work handed from a caller's thread to a batch thread, and the result handed back (T3 and S3Gen batches)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(kw_only=True)
class Handoff:
    """The answer slot of one piece of batched work: the batch thread finishes it, the caller waits on it."""

    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None

    def finish(self, result: torch.Tensor | None, error: BaseException | None = None) -> None:
        """Deliver the result or the error (only the first call counts: a hang-up may race the batch)."""
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()

    def wait(self, poll: Callable[[], None], poll_seconds: float = 0.1) -> torch.Tensor:
        """Block until finished; ``poll`` runs between waits (it may raise to give up the place)."""
        while not self.done.wait(poll_seconds):
            poll()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result
