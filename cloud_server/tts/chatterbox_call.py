"""One sentence in flight on a Chatterbox model: its budget, deadline and cancel, and how it is stopped.

The engine's forward hooks raise ``Interrupted`` from inside the library's loops; the batched path
(chatterbox_batched.py) raises it from the T3 batch decoder for that caller's sequence alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from cloud_server.tts.chatterbox_stream import TokenStream


class Interrupted(Exception):
    """Raised from a hook (or the batch decoder) to leave generation: hang-up or deadline."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled" if cancelled else "timed out")
        self.cancelled = cancelled


@dataclass
class SentenceCall:
    """One call in flight, read by the hooks."""

    budget: int
    deadline: float
    cancel: threading.Event | None
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the reader of a streamed sentence went away: T3 stops at its next token."""
    tokens: TokenStream | None = None
    """The streamed sentence's tokens, fed by the hook on T3's speech embedding (or the batch decoder)."""

    def check(self) -> None:
        """Raise ``Interrupted`` when the caller hung up, the reader left, or the sentence ran out of time."""
        if (self.cancel is not None and self.cancel.is_set()) or self.stop.is_set():
            raise Interrupted(cancelled=True)
        if time.monotonic() > self.deadline:
            raise Interrupted(cancelled=False)
