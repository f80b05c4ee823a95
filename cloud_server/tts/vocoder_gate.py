"""S3Gen for one caller at a time, first windows first.

On a CPU S3Gen is compute-bound: two callers' windows side by side take as long as one after the
other, so the batched path vocodes one caller at a time. The order matters for what callers hear:
a sentence's first window (its first audio) goes before any later window of another caller's
sentence, then arrival order (common/priority_gate.py, shared with the local voice). A waiting
caller who hangs up leaves the line (``check`` raises).
"""

from __future__ import annotations

from common.priority_gate import PriorityGate


class VocoderGate(PriorityGate):
    """A lock with a priority line: ``acquire(first=True)`` overtakes callers waiting with ``first=False``."""

    def __init__(self) -> None:
        super().__init__(slots=1)

    def locked(self) -> bool:
        """Whether someone is vocoding now."""
        return self.busy() > 0
