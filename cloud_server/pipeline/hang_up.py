"""The character hanging up: a marker in the LLM's streamed text, cut out before anything is spoken.

The marker (``server.hang_up.marker``, "[END CALL]" by default) may arrive split over several
tokens, so text that could be its beginning is held back until it either completes the marker
or cannot any more. Once the marker is seen nothing after it is spoken or kept: the reply ends
there, and the session records that the call is over (the phone then plays the busy tone).
"""

from __future__ import annotations

from common.config import HangUpConfig


def system_prompt(persona: str, cfg: HangUpConfig) -> str:
    """The persona with the instruction to hang up below it: what the LLM gets (and its warm-up caches)."""
    if not cfg.marker or not cfg.instruction:
        return persona
    return f"{persona}\n\n{cfg.instruction.replace('{marker}', cfg.marker)}"


class HangUpFilter:
    """Feed the LLM's pieces; get back the text to speak, with the marker (and all after it) removed."""

    def __init__(self, marker: str) -> None:
        self._marker = marker.lower()
        self._held = ""
        self.found = False
        """The marker was seen: the character has ended the call."""

    def push(self, piece: str) -> str:
        """The part of ``piece`` (with what was held back) that is certainly not the marker."""
        if self.found or not self._marker:
            return "" if self.found else piece
        text = self._held + piece
        folded = text.lower()
        if len(folded) != len(text):  # a rare letter whose lower case is longer: match as written
            folded = text
        at = folded.find(self._marker)
        if at >= 0:
            self.found, self._held = True, ""
            return text[:at]
        keep = self._partial_suffix(folded)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The LLM has finished: what was held back was not the marker after all."""
        held, self._held = self._held, ""
        return "" if self.found else held

    def _partial_suffix(self, folded: str) -> int:
        """Length of the longest end of ``folded`` that begins the marker."""
        for size in range(min(len(folded), len(self._marker) - 1), 0, -1):
            if self._marker.startswith(folded[-size:]):
                return size
        return 0
