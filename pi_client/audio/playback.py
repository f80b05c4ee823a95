"""Speech out: the earpiece. Production pipes a WAV stream into ``aplay``; file mode writes a WAV.

One ``start`` … ``write``* … ``finish``/``kill`` cycle is one utterance (greeting, reply or offline
message); a sink may be started again afterwards, with the same or another sample rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.wav import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, SAMPLE_WIDTH, resample_pcm16, wav_header, write_wav

_LOGGER = logging.getLogger(__name__)

_FINISH_MARGIN_SECONDS = 3.0
"""Slack on top of the audio still to play before ``finish`` gives up on aplay, in seconds."""
_KILL_WAIT_SECONDS = 2.0
"""How long a killed aplay may take to be reaped, in seconds."""
_WRITE_TIMEOUT_SECONDS = 10.0
"""aplay not taking audio for this long means the sound device is stuck, in seconds."""


class PlaybackError(RuntimeError):
    """The player could not be started or died while playing."""


def check_rate(sample_rate: int) -> None:
    """PlaybackError for a rate no player should be started with (a rate 0 once crashed ``finish``)."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise PlaybackError(f"cannot play {sample_rate} Hz audio ({MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")


class AudioSink(ABC):
    """Where the caller's ears are: accepts PCM16 mono as it arrives and plays it."""

    @abstractmethod
    async def start(self, sample_rate: int) -> None:
        """Begin one utterance at ``sample_rate`` Hz."""

    @abstractmethod
    async def write(self, pcm: bytes) -> None:
        """Queue PCM16 mono for playback; returns as soon as the player has taken it."""

    @abstractmethod
    async def finish(self) -> None:
        """End the utterance and wait (bounded) until it has been played."""

    @abstractmethod
    async def kill(self) -> None:
        """Stop playing at once (hang-up); idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most sinks hold nothing between utterances
        """Release what the sink holds between utterances."""

    @property
    def played_seconds(self) -> float:
        """Seconds of the current utterance the caller has heard so far (barge-in reports it)."""
        return 0.0


class AplaySink(AudioSink):
    """Feeds ``aplay -t wav -`` on stdin, so the first sentence plays while the rest streams in."""

    def __init__(self, device: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self._device = device
        self._env = dict(env) if env is not None else None
        self._proc: asyncio.subprocess.Process | None = None
        self._rate = 0
        self._bytes = 0
        self._started_at = 0.0
        from pi_client.audio.echo import PlayedHistory

        self.history = PlayedHistory()
        """What was played when (the echo canceller's reference)."""

    @property
    def pid(self) -> int | None:
        """The running aplay's process id (None when idle); tests watch it die on hang-up."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self, sample_rate: int) -> None:
        """Spawn aplay and give it an open-ended WAV header."""
        if self._proc is not None:
            await self.kill()
        check_rate(sample_rate)
        cmd = ["aplay", "-q"]
        if self._device:
            cmd += ["-D", self._device]
        cmd += ["-t", "wav", "-"]
        env = {**os.environ, **self._env} if self._env is not None else None
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as err:
            raise PlaybackError(f"cannot run aplay: {err}") from err
        self._rate, self._bytes, self._started_at = sample_rate, 0, time.monotonic()
        await self._send(wav_header(sample_rate))

    async def write(self, pcm: bytes) -> None:
        """Pipe PCM into aplay; waits only while its pipe is full (it plays in real time)."""
        if pcm:
            at = self._started_at + self._bytes / (SAMPLE_WIDTH * self._rate)
            self.history.add(max(at, time.monotonic()), np.frombuffer(resample_pcm16(pcm, self._rate, 16000), "<i2"))
            await self._send(pcm)
            self._bytes += len(pcm)

    async def _send(self, data: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise PlaybackError("write before start")
        try:
            proc.stdin.write(data)
            await asyncio.wait_for(proc.stdin.drain(), timeout=_WRITE_TIMEOUT_SECONDS)
        except (BrokenPipeError, ConnectionResetError) as err:
            raise PlaybackError(f"aplay exited while playing: {await self._stderr_tail()}") from err
        except TimeoutError as err:
            await self.kill()
            raise PlaybackError(f"aplay took no audio for {_WRITE_TIMEOUT_SECONDS:.0f}s: is the device stuck?") from err

    async def finish(self) -> None:
        """Close aplay's stdin and wait until it has played everything (bounded), then reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        remaining = self._bytes / (SAMPLE_WIDTH * max(self._rate, 1)) - (time.monotonic() - self._started_at)
        try:
            if proc.stdin is not None:
                proc.stdin.close()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await proc.stdin.wait_closed()
            await asyncio.wait_for(proc.wait(), timeout=max(remaining, 0.0) + _FINISH_MARGIN_SECONDS)
        except TimeoutError:
            _LOGGER.warning("aplay still running %.1fs after its audio should have ended; killed", remaining)
            await _terminate(proc)
            return
        except BaseException:  # cancelled (hang-up) or anything else: aplay must not outlive us
            await _terminate(proc)
            raise
        if proc.returncode != 0:
            raise PlaybackError(f"aplay exited with {proc.returncode}: {await _read_tail(proc)}")

    async def kill(self) -> None:
        """Terminate aplay mid-sentence and reap it."""
        self.history.cut(time.monotonic())
        proc, self._proc = self._proc, None
        if proc is not None:
            await _terminate(proc)

    async def close(self) -> None:
        """Kill any player still running."""
        await self.kill()

    @property
    def played_seconds(self) -> float:
        """Wall time since aplay started, at most the audio given to it (an estimate: aplay's buffer is not asked)."""
        if self._rate <= 0:
            return 0.0
        return max(0.0, min(time.monotonic() - self._started_at, self._bytes / (SAMPLE_WIDTH * self._rate)))

    async def _stderr_tail(self) -> str:
        proc = self._proc
        if proc is None:
            return ""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=_KILL_WAIT_SECONDS)
        return await _read_tail(proc)


async def _read_tail(proc: asyncio.subprocess.Process) -> str:
    """The last line aplay wrote to stderr (its reason for failing), if any."""
    if proc.stderr is None:
        return ""
    try:
        data = await asyncio.wait_for(proc.stderr.read(4096), timeout=0.5)
    except (TimeoutError, ValueError):
        return ""
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """Stop aplay now and reap it, so no zombie is left behind.

    SIGKILL, not SIGTERM: aplay's SIGTERM handler only aborts the PCM and waits for its main loop,
    which may sit in a read on stdin, and a hung-up caller must hear silence at once. The kernel
    closes the sound device when the process dies.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=_KILL_WAIT_SECONDS)
    except TimeoutError:
        _LOGGER.warning("aplay %d not reaped %.0fs after SIGKILL", proc.pid, _KILL_WAIT_SECONDS)
        return
    _LOGGER.debug("aplay %d ended (%s)", proc.pid, proc.returncode)


class WavFileSink(AudioSink):
    """Collects what the earpiece would have played into one WAV file (file mode and tests)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._chunks: list[bytes] = []
        self._rate: int | None = None
        self._current_rate = 0
        self._current_bytes = 0
        self.utterances = 0
        """How many utterances were started (greeting, reply, offline message, ...)."""

    @property
    def sample_rate(self) -> int | None:
        """The file's rate: the first utterance's; later ones are resampled to it."""
        return self._rate

    @property
    def pcm(self) -> bytes:
        """Everything played so far, at ``sample_rate``."""
        return b"".join(self._chunks)

    async def start(self, sample_rate: int) -> None:
        """Note the rate of the utterance that follows."""
        check_rate(sample_rate)
        if self._rate is None:
            self._rate = sample_rate
        self._current_rate = sample_rate
        self.utterances += 1
        self._current_bytes = 0

    async def write(self, pcm: bytes) -> None:
        """Keep the PCM (resampled when this utterance's rate differs from the file's)."""
        if pcm and self._rate is not None:
            # Resampling per chunk is fine here: chunks are whole sentences or large network reads.
            self._chunks.append(resample_pcm16(pcm, self._current_rate, self._rate))
            self._current_bytes += len(pcm)

    @property
    def played_seconds(self) -> float:
        """Everything written counts as heard (a file has no clock)."""
        return self._current_bytes / SAMPLE_WIDTH / max(self._current_rate, 1)

    async def finish(self) -> None:
        """Write the file so far (a played utterance is on disk even if the process dies later)."""
        self._save()

    async def kill(self) -> None:
        """Stop: keep what was 'played' until now."""
        self._save()

    async def close(self) -> None:
        """Write the file (an empty one at 16 kHz when nothing was played)."""
        self._save()

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(str(self._path), self.pcm, self._rate or 16000)
