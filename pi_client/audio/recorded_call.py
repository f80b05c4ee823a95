"""A whole call from files: the recording is the live microphone, the earpiece a file on the call's clock.

:class:`RecordedLine` feeds the recording frame by frame at real-time pace (``speed`` > 1 only
for tests: every position is counted in samples, so alignment does not depend on it), then
silence until the handset is put down. :class:`LineEarpiece` is the sink: what plays is placed at
the call's current sample, paced by the same clock, and cut at the current sample when killed, so
``earpiece[t]`` is what the caller heard at second t of the call. With ``echo_db`` the earpiece
leaks back into the microphone (:class:`~pi_client.audio.echo.HandsetLeak`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from common.wav import resample_pcm16, write_wav
from pi_client.audio.capture import BLOCK_SAMPLES, SAMPLE_RATE, AudioSource
from pi_client.audio.echo import HandsetLeak
from pi_client.audio.playback import AudioSink, check_rate

_LOGGER = logging.getLogger(__name__)

_LEAD_SECONDS = 0.2
"""How far ahead of the clock the earpiece takes audio, like aplay's buffer, in seconds."""


class RecordedLine(AudioSource):
    """The call's clock and both directions of its audio, at 16 kHz."""

    def __init__(self, recording: bytes, echo_db: float | None = None, speed: float = 1.0) -> None:
        self._recording = np.frombuffer(recording, dtype="<i2")
        self.recording_samples = self._recording.size
        self._leak = HandsetLeak(echo_db, SAMPLE_RATE) if echo_db is not None else None
        self._speed = speed
        self._earpiece = np.zeros(SAMPLE_RATE * 60, dtype=np.int16)
        self.now = 0
        """Samples of the call heard so far: the clock everything is placed by."""
        self._tick = asyncio.Event()
        self._closed = False

    @classmethod
    def from_wav(cls, path: str | Path, echo_db: float | None = None, speed: float = 1.0) -> RecordedLine:
        from pi_client.audio.capture import _read_pcm16

        return cls(_read_pcm16(Path(path)), echo_db, speed)

    @property
    def recording_done(self) -> bool:
        """Every sample of the recording has been heard."""
        return self.now >= self.recording_samples

    async def frames(self) -> AsyncIterator[bytes]:
        """The microphone: recording (then silence) plus the earpiece's leak, one frame per frame time."""
        loop = asyncio.get_running_loop()
        frame_seconds = BLOCK_SAMPLES / SAMPLE_RATE / self._speed
        started = loop.time()
        index = 0
        while not self._closed:
            await asyncio.sleep(max(0.0, started + (index + 1) * frame_seconds - loop.time()))
            first = index * BLOCK_SAMPLES
            mic = np.zeros(BLOCK_SAMPLES, dtype=np.float32)
            heard = self._recording[first : first + BLOCK_SAMPLES]
            mic[: heard.size] = heard
            if self._leak is not None:
                mic += self._leak.leak(self._played(first - self._leak.history, BLOCK_SAMPLES + self._leak.history))
            index += 1
            self.now = index * BLOCK_SAMPLES
            self._tick.set()
            self._tick = asyncio.Event()
            yield np.clip(mic, -32768, 32767).astype("<i2").tobytes()

    def close(self) -> None:
        """The handset is down: the clock stops."""
        self._closed = True
        self._tick.set()

    async def wait_until(self, sample: int) -> None:
        """Return once the clock has reached ``sample`` (or the line is closed)."""
        while self.now < sample and not self._closed:
            await self._tick.wait()

    def _played(self, first: int, count: int) -> np.ndarray:
        """The earpiece over [first, first + count) as float PCM16 values (silence before the call)."""
        out = np.zeros(count, dtype=np.float32)
        start, end = max(first, 0), min(first + count, self._earpiece.size)
        if end > start:
            out[start - first : end - first] = self._earpiece[start:end]
        return out

    def reference(self, first: int, count: int) -> bytes:
        """What the earpiece played over those samples (the echo canceller's reference)."""
        return self._played(first, count).astype("<i2").tobytes()

    def place(self, at: int, pcm: np.ndarray) -> None:
        """Put earpiece audio at sample ``at`` (growing the track as needed)."""
        end = at + pcm.size
        if end > self._earpiece.size:
            grown = np.zeros(max(end, 2 * self._earpiece.size), dtype=np.int16)
            grown[: self._earpiece.size] = self._earpiece
            self._earpiece = grown
        self._earpiece[at:end] = pcm

    def take_from(self, at: int, end: int) -> np.ndarray:
        """Erase the earpiece over [at, end) (playback paused); returns what was there."""
        taken = self._earpiece[at:end].copy()
        self._earpiece[at:end] = 0
        return taken

    def silence_from(self, at: int) -> None:
        """Erase the earpiece from sample ``at`` on (playback killed)."""
        self._earpiece[at:] = 0

    def save_earpiece(self, path: str | Path) -> None:
        """The earpiece as a 16 kHz WAV exactly as long as the call."""
        write_wav(str(path), self._earpiece[: self.now].astype("<i2").tobytes(), SAMPLE_RATE)


class LineEarpiece(AudioSink):
    """The sink of a recorded call: audio lands on the call's clock, plays at its pace, stops where killed.

    A pause takes back what was placed ahead of the clock (silence from the current sample on) and
    holds it, with what is written meanwhile, until the resume places it at the clock again.
    """

    def __init__(self, line: RecordedLine) -> None:
        self._line = line
        self._rate = SAMPLE_RATE
        self._start = 0
        """Call sample where the current stretch of the utterance (since start or the latest resume) began."""
        self._end = 0
        self._heard_before = 0
        """Samples of the utterance heard before the current stretch (paused stretches)."""
        self._held: list[np.ndarray] | None = None
        """Paused: the utterance's audio waiting for the resume."""
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.utterances = 0
        self.starts: list[float] = []
        """Call seconds at which each utterance began to play."""
        self.cuts: list[float] = []
        """Call seconds at which playback was cut short (barge-in, hang-up)."""
        self.pauses: list[float] = []
        """Call seconds at which playback was paused (the caller started talking)."""
        self.resumes: list[float] = []
        """Call seconds at which a paused playback went on."""

    async def start(self, sample_rate: int) -> None:
        check_rate(sample_rate)
        self._drop_held()
        self._rate = sample_rate
        self._start = self._end = max(self._line.now, self._end)
        self._heard_before = 0
        self.utterances += 1
        self.starts.append(self._start / SAMPLE_RATE)

    async def write(self, pcm: bytes) -> None:
        if not pcm:
            return
        audio = np.frombuffer(resample_pcm16(pcm, self._rate, SAMPLE_RATE), dtype="<i2")
        if self._held is not None:
            self._held.append(audio.copy())
            return
        self._end = max(self._end, self._line.now)  # a stalled stream resumes now, not in the past
        self._line.place(self._end, audio)
        self._end += audio.size
        await self._line.wait_until(self._end - round(_LEAD_SECONDS * SAMPLE_RATE))

    async def finish(self) -> None:
        while True:
            await self._resumed.wait()
            await self._line.wait_until(self._end)
            if self._held is None:
                return

    async def kill(self) -> None:
        now = self._line.now
        if self._end > now or self._held is not None:
            self._line.silence_from(now)
            self.cuts.append(now / SAMPLE_RATE)
            _LOGGER.info("earpiece cut at %.2fs of the call", now / SAMPLE_RATE)
        self._end = min(self._end, now)
        self._drop_held()

    def pause(self) -> None:
        now = self._line.now
        if self._held is not None or self._end <= now:
            return  # nothing playing
        self._held = [self._line.take_from(now, self._end)]
        self._heard_before += now - self._start
        self._start = self._end = now
        self._resumed.clear()
        self.pauses.append(now / SAMPLE_RATE)

    def resume(self) -> None:
        if self._held is None:
            return
        held, self._held = np.concatenate(self._held), None
        self._start = self._end = max(self._line.now, self._end)
        self._line.place(self._end, held)
        self._end += held.size
        self._resumed.set()
        self.resumes.append(self._start / SAMPLE_RATE)

    @property
    def paused(self) -> bool:
        return self._held is not None

    def _drop_held(self) -> None:
        self._held = None
        self._resumed.set()

    @property
    def played_seconds(self) -> float:
        """Seconds of the current utterance the caller has heard so far (pauses left out)."""
        return (self._heard_before + max(0, min(self._line.now, self._end) - self._start)) / SAMPLE_RATE

    @property
    def playing(self) -> bool:
        """Audio of the current utterance is still ahead of the clock."""
        return self._end > self._line.now
