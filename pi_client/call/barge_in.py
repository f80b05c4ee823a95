"""Listening while the phone holds the turn: the caller talking over it, long enough, interrupts (barge-in).

:class:`Overhearing` keeps one listener running from the moment the phone takes the turn (the
caller's utterance ended, or the phone starts to talk) until the call listens for a turn again.
Speech that lasts ``min_speech_seconds`` meanwhile emits :class:`~pi_client.call.machine.BargeIn`
(the runner cuts the playback, the transcription or the request in flight) and the same listener
goes on to hear the whole utterance, pre-roll from its onset included, as the next turn. Shorter
speech (an "mm-hm", a cough) is dropped and the listener starts again. Before that, the first
moment of speech pauses the earpiece (:class:`~pi_client.call.earpiece_hold.EarpieceHold`), which
plays on if the speech stops short of a barge-in; a short utterance that the caller follows up
while the earpiece is still paused ("Actually, ... never mind") starts the interruption's audio.
When the phone is done first, the call's next ``Listen`` takes over the listener, so words begun
at the end of a reply are kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from common.config import BargeInConfig
from pi_client.call.earpiece_hold import EarpieceHold
from pi_client.call.machine import BargeIn, Event

_LOGGER = logging.getLogger(__name__)

FrameReport = Callable[[bool, float], None]
"""``report(in_speech, talk_seconds)``, called for every frame the listener hears: speech confirmed, and how
long the caller has been talking (from the onset, unconfirmed speech included; 0 when quiet)."""
OverhearFn = Callable[[FrameReport], Awaitable[Any]]
"""One listen (an utterance, or None on timeout) that reports every frame."""


class Overhearing:
    """The one listener of a call, running through playback; tells the call when the caller barges in."""

    def __init__(
        self,
        listen: OverhearFn,
        cfg: BargeInConfig,
        played_seconds: Callable[[], float],
        emit: Callable[[Event], None],
        hold: EarpieceHold | None = None,
    ) -> None:
        """``hold`` pauses the earpiece on the first speech over it (pi.turns.barge_in.pause_on_speech)."""
        self._listen = listen
        self._cfg = cfg
        self._played_seconds = played_seconds
        self._emit = emit
        self._hold = hold
        self._task: asyncio.Task[Any] | None = None
        self._barged = False
        self._barged_in_pause: int | None = None
        """The earpiece pause a barge-in came in (None: the earpiece was playing)."""
        self.busy = False
        """The phone holds the turn (transcribing, asking, talking): caller speech now is a barge-in."""
        self.playing = False
        """The earpiece is playing something the caller may interrupt."""
        self.caller_speaking = False
        """The listener is inside an utterance (confirmed speech, not yet ended)."""

    def hold(self) -> None:
        """The phone takes the turn (the caller's utterance ended): keep listening (when barge-in is on)."""
        self.busy = True
        if not self._cfg.enabled:
            return
        if self._task is None or self._task.done():
            self._barged = False
            self._task = asyncio.create_task(self._run(), name="overhear")

    def playback_started(self) -> None:
        """The phone starts talking: listen over it."""
        self.playing = True
        if self._hold is not None:
            self._hold.release()
        self.hold()

    def playback_ended(self) -> None:
        """The phone has finished talking (or was cut): the turn is the caller's again."""
        self.playing = self.busy = False
        if self._hold is not None:
            self._hold.release()

    async def listen(self) -> Any:
        """The next utterance: the running listener's if the caller is talking or has barged in, else a fresh one."""
        self.playing = self.busy = False  # the turn is the caller's
        task, old = self._task, None
        if task is None or (not task.done() and not (self.caller_speaking or self._barged)):
            # Quiet: start afresh, so the no-speech timeout counts from now. The new listener opens its
            # tap before the old one closes, so the shared microphone never sees nobody listening.
            old, self._barged = task, False
            task = asyncio.create_task(self._run(), name="listen")
        self._task = task
        try:
            if old is not None:
                await _cancel(old)
            return await task
        finally:
            if not task.done():
                task.cancel()  # hung up (this listen was cancelled) before the listener was awaited
            self._task = None
            self._barged = False

    async def stop(self) -> None:
        """Hang-up, or the call moves on to something that is not listened over."""
        self.playing = self.busy = False
        if self._hold is not None:
            self._hold.release()
        task, self._task = self._task, None
        if task is not None:
            await _cancel(task)
        self.caller_speaking = False

    async def _run(self) -> Any:
        short: tuple[Any, int] | None = None  # a too-short utterance and the earpiece pause it came in
        while True:
            utterance = await self._listen(self._on_frame)
            self.caller_speaking = False
            if self._barged or not self.busy:
                if short is not None and utterance is not None and short[1] == self._barged_in_pause:
                    utterance = _joined(short[0], utterance)  # "Actually, ... never mind": one interruption
                return utterance
            short = None
            if utterance is not None:
                _LOGGER.info(
                    "%.2fs of speech while the phone held the turn: too short to interrupt",
                    utterance.speech_seconds,
                )
                if self._hold is not None and self._hold.paused:
                    short = utterance, self._hold.pause_number

    def _on_frame(self, in_speech: bool, talk_seconds: float) -> None:
        self.caller_speaking = in_speech
        if self._barged or not self.busy:
            return
        if in_speech and talk_seconds >= self._cfg.min_speech_seconds:
            self._barged = True
            heard = self._played_seconds() if self.playing else 0.0  # paused: up to the pause
            if self._hold is not None:
                self._barged_in_pause = self._hold.pause_number if self._hold.paused else None
                self._hold.barged_in()
            _LOGGER.info("caller barged in %.2fs into the playback (%.2fs of speech)", heard, talk_seconds)
            self._emit(BargeIn(heard, self.playing))
        elif self._hold is not None:
            self._hold.frame(talk_seconds, self.playing)


def _joined(first: Any, then: Any) -> Any:
    """One utterance of two heard during one earpiece pause: a short first word the turn detector
    ended on its own, and the words after it, which made the barge-in (Whisper hears both)."""
    from pi_client.turns.endpoint import Utterance

    if not isinstance(first, Utterance) or not isinstance(then, Utterance):
        return then
    _LOGGER.info("the interruption's first %.2fs of speech joined to it", first.speech_seconds)
    speech = first.speech_seconds + then.speech_seconds
    return dataclasses.replace(then, pcm=first.pcm + then.pcm, speech_seconds=speech)


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it; a cancellation of the caller itself still goes through."""
    task.cancel()
    await asyncio.wait({task})
