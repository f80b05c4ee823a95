"""The earpiece falls silent the moment the caller starts talking over it, and plays on if that was no interruption.

A barge-in needs ``pi.turns.barge_in.min_speech_seconds`` of talking before the phone is sure; a
person who says "Stop," would hear the reply go on all that time. So, as voice products do
("false interruption" handling), a shorter stretch of speech over the playback
(``pause_after_seconds``) pauses the earpiece at once, the reply still streaming in behind it.
Speech that goes on to ``min_speech_seconds`` is the barge-in (the cut follows, and what the
caller heard ends at the pause); speech that stops short of it (a cough, "mm-hm", a burst of
echo) resumes the reply where it stopped after ``resume_after_seconds`` of quiet, so nothing of
it is lost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from common.config import BargeInConfig
from pi_client.audio.capture import BLOCK_SAMPLES, SAMPLE_RATE
from pi_client.audio.playback import AudioSink

_LOGGER = logging.getLogger(__name__)

FRAME_SECONDS = BLOCK_SAMPLES / SAMPLE_RATE
"""One listener frame, in seconds (the hold counts quiet in frames)."""


class EarpieceHold:
    """Pauses and resumes the earpiece on the caller's speech, frame by frame; counts both for the turn's log."""

    def __init__(self, cfg: BargeInConfig, sink: Callable[[], AudioSink]) -> None:
        """``sink`` gives the earpiece in use (the runner may wrap it)."""
        self._cfg = cfg
        self._sink = sink
        self._quiet_needed = max(1, math.ceil(cfg.resume_after_seconds / FRAME_SECONDS - 1e-9))
        self._quiet = 0
        self._talk = 0.0
        self._paused_at = 0.0
        self._spoken = 0.0
        self.paused = False
        """The earpiece is paused by this hold (the caller is talking, or has just been)."""
        self.pause_number = 0
        """Counts every pause of the call (the barge-in watch tells one pause from the next)."""
        self.pauses = 0
        """Pauses since :meth:`count_afresh` (the current reply's)."""
        self.resumes = 0
        """Pauses that ended in a resume (false interruptions) since :meth:`count_afresh`."""

    @property
    def enabled(self) -> bool:
        return self._cfg.enabled and self._cfg.pause_on_speech

    def frame(self, talk_seconds: float, playing: bool) -> None:
        """One frame heard over the phone's turn; ``talk_seconds`` is how long the caller has been talking
        (from the onset to the latest speech frame, 0 when no speech is under way)."""
        grew = talk_seconds > self._talk
        self._talk = talk_seconds
        if not self.enabled:
            return
        if self.paused:
            self._spoken = max(self._spoken, talk_seconds)
            self._quiet = 0 if grew else self._quiet + 1
            if self._quiet >= self._quiet_needed:
                self._resume()
        elif playing and grew and talk_seconds >= self._cfg.pause_after_seconds:
            self._pause()

    def barged_in(self) -> None:
        """The speech became a barge-in: the pause stands, and the cut ends the utterance."""
        if self.paused:
            _LOGGER.info("earpiece pause became a barge-in")
        self.paused = False

    def release(self) -> None:
        """The utterance is over (played out, cut, or hung up): nothing left to resume."""
        self.paused = False
        self._talk = 0.0

    def count_afresh(self) -> None:
        """A new reply starts playing: its turn counts its own pauses."""
        self.pauses = self.resumes = 0

    def _pause(self) -> None:
        sink = self._sink()
        sink.pause()
        if not sink.paused:
            return  # nothing left to play, or a sink that cannot pause
        self.paused, self._quiet, self._spoken = True, 0, self._talk
        self._paused_at = sink.played_seconds
        self.pauses += 1
        self.pause_number += 1
        _LOGGER.info("earpiece paused %.2fs into the playback: the caller is talking", self._paused_at)

    def _resume(self) -> None:
        self.paused = False
        self.resumes += 1
        self._sink().resume()
        _LOGGER.info("earpiece resumed at %.2fs: no interruption (%.2fs of speech)", self._paused_at, self._spoken)
