"""Endpointing: where the caller's utterance starts and ends, from per-frame speech probabilities.

:class:`Endpointer` is pure and clock-free (time is counted in frames), in the manner of Home
Assistant's ``VoiceCommandSegmenter``; :func:`listen` drives it with a live audio source and
Silero VAD, running the model in a worker thread so the event loop keeps hearing the hook.

With a turn detector (Smart Turn), a short silence asks the model whether the caller has finished:
the endpointer returns ``TURN_CHECK`` and the driver feeds the model's verdict back through
:meth:`Endpointer.turn_verdict`, so the decision stays pure and tests drive it with values.

With a :class:`~pi_client.turns.speculative.SpeculativeTranscriber`, that short silence (or, under
the silence rule, the same silence as ``CANDIDATE_END``) also starts Whisper on the turn so far,
and speech after it drops that transcript again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.config import SmartTurnConfig, VADConfig
from pi_client.audio.capture import BLOCK_SAMPLES, SAMPLE_RATE, AudioSource
from pi_client.turns.smart_turn import TurnDetector
from pi_client.turns.speculative import SpeculativeTranscriber
from pi_client.turns.vad import SileroVad

_LOGGER = logging.getLogger(__name__)

HYSTERESIS = 0.15
"""Once speaking, a frame counts as silence only below threshold minus this (Silero's advice)."""
REJOIN_SECONDS = 0.5
"""A speech run too short to count (but half min_speech_seconds or more: a short word, not a click),
followed within this gap by speech that does, starts the utterance ("Wait, ... what about Italy?" keeps
its "Wait", and barge-in counts the talking from it), in seconds."""
_MAX_BATCH = 32
"""Most frames handed to the VAD thread at once (~1 s of audio)."""


class EndpointEvent(enum.Enum):
    """What one frame decided."""

    NONE = "none"
    SPEECH_STARTED = "speech_started"
    UTTERANCE_ENDED = "utterance_ended"
    TIMEOUT = "timeout"
    TURN_CHECK = "turn_check"
    """A short silence after speech: ask the turn detector, then call ``turn_verdict``."""
    CANDIDATE_END = "candidate_end"
    """Without a detector: a short silence after speech, where the turn may end (speculation starts)."""


def _frames(seconds: float, frame_seconds: float) -> int:
    """Frames needed to cover ``seconds`` (rounded up)."""
    return max(1, math.ceil(seconds / frame_seconds - 1e-9))


def _frames_within(seconds: float, frame_seconds: float) -> int:
    """Frames that fit in ``seconds`` (rounded down)."""
    return max(1, math.floor(seconds / frame_seconds + 1e-9))


class Endpointer:
    """Turns speech probabilities, one per frame, into start/end decisions; counts time in frames."""

    def __init__(
        self,
        cfg: VADConfig,
        frame_seconds: float,
        smart_turn: SmartTurnConfig | None = None,
        candidate_after_seconds: float | None = None,
    ) -> None:
        """``smart_turn`` set: a turn detector is there to ask; None: the fixed trailing-silence rule.
        ``candidate_after_seconds`` set: ``CANDIDATE_END`` after that much silence (speculation starts
        there; with a detector, only when it comes before the detector's check)."""
        self.cfg = cfg
        self.frame_seconds = frame_seconds
        self._min_speech = _frames(cfg.min_speech_seconds, frame_seconds)
        self._trailing = _frames(cfg.trailing_silence_seconds, frame_seconds)
        self._check: int | None = None  # silent frames before the detector is asked
        self._ceiling = self._trailing  # silent frames that end the turn when the detector says "not finished"
        if smart_turn is not None:
            self._check = _frames(smart_turn.check_after_silence_seconds, frame_seconds)
            self._ceiling = _frames(smart_turn.max_silence_seconds, frame_seconds)
        self._silence_limit = self._ceiling if self._check is not None else self._trailing
        self._candidate: int | None = None
        if candidate_after_seconds is not None:
            self._candidate = _frames(candidate_after_seconds, frame_seconds)
        self._max_utterance = _frames_within(cfg.max_utterance_seconds, frame_seconds)
        self._timeout = _frames(cfg.no_speech_timeout_seconds, frame_seconds)
        self.preroll_frames = round(cfg.preroll_seconds / frame_seconds)
        self.frame_index = -1
        """Index of the last frame processed."""
        self.in_speech = False
        """Speech has been confirmed (lasted at least min_speech_seconds)."""
        self.done = False
        self.speech_start_frame: int | None = None
        """First frame of the current (candidate or confirmed) speech run."""
        self.last_speech_frame: int | None = None
        self._run = 0  # consecutive speech frames of a candidate
        self._silence = 0  # consecutive silent frames inside an utterance
        self._rejoin = _frames(REJOIN_SECONDS, frame_seconds)
        self._dropped: tuple[int, int] | None = None  # first and last frame of the latest run too short to count
        self.ended_by = ""
        """What ended the utterance: "model", "silence" or "max_length" (empty until it ends)."""

    @property
    def utterance_start_frame(self) -> int:
        """First frame of the utterance audio: speech start minus the pre-roll (never before 0)."""
        return max(0, self.onset_frame - self.preroll_frames)

    @property
    def onset_frame(self) -> int:
        """Where the caller started: the speech start, or a short word just before it (:data:`REJOIN_SECONDS`)."""
        start = self.speech_start_frame if self.speech_start_frame is not None else self.frame_index + 1
        if self._dropped is not None and start - self._dropped[1] <= self._rejoin:
            start = self._dropped[0]
        return start

    @property
    def talk_seconds(self) -> float:
        """Audio time from the onset to the last speech frame (how long the caller has been talking)."""
        if self.last_speech_frame is None:
            return 0.0
        return (self.last_speech_frame - self.onset_frame + 1) * self.frame_seconds

    @property
    def voice(self) -> bool:
        """The latest frame was speech (a run not yet confirmed included): the caller may be talking."""
        return self.last_speech_frame is not None and self.last_speech_frame == self.frame_index

    @property
    def speech_seconds(self) -> float:
        """Audio time from the first to the last speech frame."""
        if self.speech_start_frame is None or self.last_speech_frame is None:
            return 0.0
        return (self.last_speech_frame - self.speech_start_frame + 1) * self.frame_seconds

    @property
    def endpoint_delay_seconds(self) -> float:
        """Audio time from the last speech frame to the latest frame processed."""
        if self.last_speech_frame is None:
            return 0.0
        return (self.frame_index - self.last_speech_frame) * self.frame_seconds

    def process(self, speech_prob: float) -> EndpointEvent:
        """Take the next frame's speech probability; return what it decided."""
        if self.done:
            return EndpointEvent.NONE
        self.frame_index += 1
        n = self.frame_index
        threshold = self.cfg.threshold
        if not self.in_speech:
            if speech_prob >= threshold:
                if self._run == 0:
                    self.speech_start_frame = n
                self._run += 1
                self.last_speech_frame = n
                if self._run >= self._min_speech:
                    self.in_speech = True
                    self._silence = 0
                    return self._check_max(EndpointEvent.SPEECH_STARTED)
            elif not (self._run and speech_prob >= threshold - HYSTERESIS):
                # A run shorter than min_speech_seconds was a click or a cough: forget it (unless speech follows).
                word = self._run >= max(2, self._min_speech // 2)  # a short word, not a click
                if word and self.speech_start_frame is not None and self.last_speech_frame is not None:
                    self._dropped = (self.speech_start_frame, self.last_speech_frame)
                self._run = 0
                self.speech_start_frame = self.last_speech_frame = None
            if n + 1 >= self._timeout:
                self.done = True
                return EndpointEvent.TIMEOUT
            return EndpointEvent.NONE
        if speech_prob >= threshold or (self._silence == 0 and speech_prob >= threshold - HYSTERESIS):
            self._silence = 0
            self._silence_limit = self._ceiling if self._check is not None else self._trailing
            self.last_speech_frame = n
        else:
            self._silence += 1
            if self._silence >= self._silence_limit:
                return self._end("silence")
            if self._silence == self._check:
                return self._check_max(EndpointEvent.TURN_CHECK)
            if self._silence == self._candidate:
                return self._check_max(EndpointEvent.CANDIDATE_END)
        return self._check_max(EndpointEvent.NONE)

    def turn_verdict(self, finished: bool | None) -> EndpointEvent:
        """The detector's answer to ``TURN_CHECK``: True ends the turn now, False waits for more speech
        up to the ceiling silence, None (no answer: the model failed) falls back to the trailing silence."""
        if self.done:
            return EndpointEvent.NONE
        if finished:
            return self._end("model")
        if finished is None:
            self._silence_limit = self._trailing
            if self._silence >= self._silence_limit:
                return self._end("silence")
        return EndpointEvent.NONE

    def _end(self, by: str) -> EndpointEvent:
        self.done = True
        self.ended_by = by
        return EndpointEvent.UTTERANCE_ENDED

    def _check_max(self, event: EndpointEvent) -> EndpointEvent:
        assert self.speech_start_frame is not None
        if self.frame_index - self.speech_start_frame + 1 >= self._max_utterance:
            _LOGGER.debug("Utterance cut at %.1f s", self.cfg.max_utterance_seconds)
            return self._end("max_length")
        return event


@dataclass(frozen=True)
class Utterance:
    """One caller utterance, ready for STT."""

    pcm: bytes
    """16 kHz mono PCM16, pre-roll included."""
    speech_seconds: float
    """Audio time from the first to the last speech frame, in seconds."""
    endpoint_delay_seconds: float
    """Audio time from the last speech frame to the end-of-utterance decision, in seconds."""
    ended_by: str = "silence"
    """How the end was decided: "model" (Smart Turn), "silence", "max_length" or "audio_end"."""


async def _pump(source: AudioSource, queue: asyncio.Queue[bytes | None]) -> None:
    """Copy the source's frames into ``queue``, then None when it ends; closes the iterator on cancel."""
    frames = source.frames()
    try:
        async for frame in frames:
            await queue.put(frame)
    finally:
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            await aclose()  # an async generator releases the device now, not at garbage collection
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(None)


async def listen(
    source: AudioSource,
    vad: SileroVad,
    cfg: VADConfig,
    detector: TurnDetector | None = None,
    turn_cfg: SmartTurnConfig | None = None,
    *,
    speculator: SpeculativeTranscriber | None = None,
    speculate_after_seconds: float | None = None,
    on_frame: Callable[[bool, float], None] | None = None,
    on_voice: Callable[[bool, bool], None] | None = None,
) -> Utterance | None:
    """Listen until the caller has said something; None on timeout or when the source ends silent.

    With ``detector``, a short silence asks it whether the caller has finished (``turn_cfg`` gives
    the silences, its defaults when None); without it, the trailing silence of ``cfg`` ends the turn.
    With ``speculator``, that short silence starts Whisper on the turn so far (see the module doc), or
    ``speculate_after_seconds`` of silence when that is sooner (pi.stt.speculate_after_silence_seconds).
    ``on_frame(in_speech, talk_seconds)`` follows every frame (barge-in watches how long the
    caller has been talking over the playback, from the onset; unconfirmed speech counts too, so
    the earpiece can pause at the first syllable); ``on_voice(voice, confirmed)`` says
    whether the frame was speech (a run too short to confirm yet included) and whether speech is
    confirmed (the phone holds a reply's first audio while the caller may be going on).
    """
    turn_cfg = turn_cfg or SmartTurnConfig()
    candidate = None
    if speculator is not None:
        candidate = turn_cfg.check_after_silence_seconds if detector is None else None
        if speculate_after_seconds is not None and speculate_after_seconds < turn_cfg.check_after_silence_seconds:
            candidate = speculate_after_seconds
    endpointer = Endpointer(cfg, BLOCK_SAMPLES / SAMPLE_RATE, turn_cfg if detector is not None else None, candidate)
    speculated_at: int | None = None  # the last speech frame when the speculation started
    kept: list[bytes] = []  # frames from index kept_from onwards
    kept_from = 0
    await asyncio.to_thread(vad.reset)
    if speculator is not None:
        speculator.drop()  # a guess from an earlier turn never answers this one
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4 * _MAX_BATCH)
    pump = asyncio.create_task(_pump(source, queue), name="listen-audio")
    try:
        while True:
            batch: list[bytes | None] = [await queue.get()]
            while len(batch) < _MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            frames = [f for f in batch if f is not None]
            probs = await asyncio.to_thread(vad.speech_probabilities, frames) if frames else []
            for frame, prob in zip(frames, probs, strict=True):
                kept.append(frame)
                event = endpointer.process(prob)
                if speculator is not None and speculated_at not in (None, endpointer.last_speech_frame):
                    speculator.drop()  # the caller went on
                    speculated_at = None
                if on_frame is not None:
                    on_frame(endpointer.in_speech, endpointer.talk_seconds)
                if on_voice is not None:
                    on_voice(endpointer.voice, endpointer.in_speech)
                if event is EndpointEvent.TIMEOUT:
                    _LOGGER.info("No speech within %.1f s", cfg.no_speech_timeout_seconds)
                    return None
                if event is EndpointEvent.SPEECH_STARTED:
                    _LOGGER.debug("Speech started at frame %s", endpointer.speech_start_frame)
                candidate_end = event in (EndpointEvent.TURN_CHECK, EndpointEvent.CANDIDATE_END)
                if candidate_end and speculator is not None and speculated_at is None:  # once per silence
                    speculator.start(b"".join(kept[max(0, endpointer.utterance_start_frame - kept_from) :]))
                    speculated_at = endpointer.last_speech_frame
                if event is EndpointEvent.TURN_CHECK and detector is not None:
                    pcm = b"".join(kept[max(0, endpointer.utterance_start_frame - kept_from) :])
                    event = endpointer.turn_verdict(await _ask(detector, pcm, endpointer))
                if event is EndpointEvent.UTTERANCE_ENDED:
                    return _utterance(endpointer, kept, kept_from, speculator)
                drop = endpointer.utterance_start_frame - kept_from  # keep only pre-roll + candidate
                if drop > 0:
                    del kept[:drop]
                    kept_from += drop
            if len(frames) < len(batch):  # the source ended
                if endpointer.in_speech:
                    endpointer.ended_by = endpointer.ended_by or "audio_end"
                    return _utterance(endpointer, kept, kept_from, speculator)
                _LOGGER.info("Audio ended without speech")
                return None
    except BaseException:  # hang-up (cancelled) or a failing source: nothing will use the speculation
        if speculator is not None:
            speculator.drop()
        raise
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def _ask(detector: TurnDetector, pcm: bytes, endpointer: Endpointer) -> bool | None:
    """The detector's verdict on the turn so far, in a worker thread; None when it fails (silence rule)."""
    started = time.perf_counter()
    try:
        finished, prob = await asyncio.to_thread(detector.is_finished, pcm)
    except Exception:  # a broken model must not end the call: this turn falls back to the silence rule
        _LOGGER.exception("Smart Turn failed; ending this turn by silence")
        return None
    _LOGGER.info(
        "Smart Turn after %.2f s of silence: %s (%.2f) in %.0f ms",
        endpointer.endpoint_delay_seconds,
        "finished" if finished else "not finished",
        prob,
        (time.perf_counter() - started) * 1000,
    )
    return finished


def _utterance(
    endpointer: Endpointer, kept: list[bytes], kept_from: int, speculator: SpeculativeTranscriber | None
) -> Utterance:
    start = max(0, endpointer.utterance_start_frame - kept_from)
    utterance = Utterance(
        pcm=b"".join(kept[start:]),
        speech_seconds=endpointer.speech_seconds,
        endpoint_delay_seconds=endpointer.endpoint_delay_seconds,
        ended_by=endpointer.ended_by or "silence",
    )
    if speculator is not None:
        speculator.claim(utterance.pcm)  # the listener that starts next must not drop it
    _LOGGER.info(
        "Utterance: %.2f s of speech, %.2f s of audio, ended by %s %.2f s after the last speech",
        utterance.speech_seconds,
        len(utterance.pcm) / 2 / SAMPLE_RATE,
        utterance.ended_by,
        utterance.endpoint_delay_seconds,
    )
    return utterance
