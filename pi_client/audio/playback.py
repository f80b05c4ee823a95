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
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

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

    def pause(self) -> None:  # noqa: B027 - optional: a sink that cannot pause plays on
        """Silence the earpiece now; the rest of the utterance, and what comes meanwhile, waits for :meth:`resume`."""

    def resume(self) -> None:  # noqa: B027 - optional, as pause
        """Play on from exactly where :meth:`pause` stopped."""

    @property
    def paused(self) -> bool:
        """Between :meth:`pause` and :meth:`resume` (or the end of the utterance)."""
        return False



class SinkWrapper(AudioSink):
    """A sink in front of another (telephone band, filler): what the caller hears is the inner sink's."""

    def __init__(self, inner: AudioSink) -> None:
        self._inner = inner

    async def close(self) -> None:
        await self._inner.close()

    @property
    def played_seconds(self) -> float:
        """The inner earpiece's (barge-in reports it)."""
        return self._inner.played_seconds

    def pause(self) -> None:
        self._inner.pause()

    def resume(self) -> None:
        self._inner.resume()

    @property
    def paused(self) -> bool:
        return self._inner.paused

class AplaySink(AudioSink):
    """Feeds ``aplay -t wav -`` on stdin, so the first sentence plays while the rest streams in.

    A pause kills aplay (its pipe and ALSA buffer hold a second or more ahead of the ear, which must
    not play on) and keeps the utterance from the position reached; a resume starts a new aplay there.
    """

    def __init__(self, device: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self._device = device
        self._env = dict(env) if env is not None else None
        self._proc: asyncio.subprocess.Process | None = None
        self._rate = 0
        self._bytes = 0
        """Bytes of the utterance written so far."""
        self._pcm = bytearray()
        """The utterance from byte ``_kept_from`` on: what a resume may still have to play."""
        self._kept_from = 0
        self._base = 0
        """Byte of the utterance the running aplay started from."""
        self._sent = 0
        """Bytes of the utterance given to aplay (the running one started at ``_base``)."""
        self._started_at = 0.0
        self._paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._lock = asyncio.Lock()
        """One sender at a time (a write, or the catch-up after a resume)."""
        self._background: set[asyncio.Task[None]] = set()
        from pi_client.audio.echo import PlayedHistory

        self.history = PlayedHistory()
        """What was played when (the echo canceller's reference)."""

    @property
    def pid(self) -> int | None:
        """The running aplay's process id (None when idle); tests watch it die on hang-up."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self, sample_rate: int) -> None:
        """Spawn aplay and give it an open-ended WAV header."""
        if self._proc is not None or self._paused:
            await self.kill()
        check_rate(sample_rate)
        self._rate, self._bytes, self._kept_from, self._pcm = sample_rate, 0, 0, bytearray()
        await self._spawn(0)

    async def _spawn(self, at: int) -> None:
        """A new aplay playing the utterance from byte ``at``."""
        cmd = ["aplay", "-q"]
        if self._device:
            cmd += ["-D", self._device]
        cmd += ["-t", "wav", "-"]
        env = {**os.environ, **self._env} if self._env is not None else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as err:
            raise PlaybackError(f"cannot run aplay: {err}") from err
        if self._paused or self._rate <= 0:  # paused (or killed) while it started: it must not idle, open
            await _terminate(proc)
            return
        self._proc, self._base, self._sent, self._started_at = proc, at, at, time.monotonic()
        await self._send(wav_header(self._rate), proc)

    async def write(self, pcm: bytes) -> None:
        """Pipe PCM into aplay; waits only while its pipe is full (it plays in real time). Paused: kept for later."""
        if not pcm:
            return
        if self._rate <= 0:
            raise PlaybackError("write before start")
        self._pcm += pcm
        self._bytes += len(pcm)
        if not self._paused:  # forget what has been heard (a resume never goes back before it)
            heard = max(0, self._position() - self._kept_from)
            del self._pcm[:heard]
            self._kept_from += heard
        async with self._lock:
            await self._send_pending()

    async def _send_pending(self) -> None:
        """Give aplay what it has not had yet (a new aplay after a resume); nothing while paused."""
        while not self._paused and self._rate > 0 and self._sent < self._bytes:
            proc = self._proc
            if proc is None:
                await self._spawn(self._sent)
                continue
            chunk = bytes(self._pcm[self._sent - self._kept_from : self._bytes - self._kept_from])
            at = self._started_at + (self._sent - self._base) / (SAMPLE_WIDTH * self._rate)
            self.history.add(max(at, time.monotonic()), np.frombuffer(resample_pcm16(chunk, self._rate, 16000), "<i2"))
            await self._send(chunk, proc)
            if proc is self._proc:  # else paused (or killed) while aplay took it: the resume sends it again
                self._sent += len(chunk)

    async def _send(self, data: bytes, proc: asyncio.subprocess.Process) -> None:
        if proc.stdin is None:
            raise PlaybackError("write before start")
        try:
            proc.stdin.write(data)
            await asyncio.wait_for(proc.stdin.drain(), timeout=_WRITE_TIMEOUT_SECONDS)
        except (BrokenPipeError, ConnectionResetError) as err:
            if proc is not self._proc:
                return  # killed by a pause or a hang-up, not dead by itself
            raise PlaybackError(f"aplay exited while playing: {await self._stderr_tail()}") from err
        except TimeoutError as err:
            await self.kill()
            raise PlaybackError(f"aplay took no audio for {_WRITE_TIMEOUT_SECONDS:.0f}s: is the device stuck?") from err

    def _position(self) -> int:
        """Byte of the utterance the ear has reached (an estimate: wall time since aplay started)."""
        if self._paused or self._rate <= 0:
            return self._base
        played = round((time.monotonic() - self._started_at) * self._rate) * SAMPLE_WIDTH
        return self._base + max(0, min(played, self._sent - self._base))

    def pause(self) -> None:
        """Kill aplay now (its buffers go with it) and keep the utterance from the position reached."""
        if self._paused or self._rate <= 0:
            return
        self._base = self._sent = self._position()
        self._paused = True
        self._resumed.clear()
        self.history.cut(time.monotonic())
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # silent now; reaped in the background
            self._in_background(_terminate(proc), "aplay-paused")

    def resume(self) -> None:
        """A new aplay plays on from the paused position, then whatever came in meanwhile."""
        if not self._paused:
            return
        self._paused = False
        self._resumed.set()
        self._in_background(self._catch_up(), "aplay-catch-up")

    @property
    def paused(self) -> bool:
        return self._paused

    async def _catch_up(self) -> None:
        async with self._lock:
            await self._send_pending()

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def finish(self) -> None:
        """Close aplay's stdin and wait until it has played everything (bounded), then reap it.
        Paused meanwhile: waits for the resume (the new aplay plays the rest)."""
        while self._rate > 0:
            await self._resumed.wait()
            async with self._lock:
                await self._send_pending()
            proc = self._proc
            if proc is None:
                if self._paused:
                    continue
                break  # killed (hang-up)
            remaining = (self._sent - self._position()) / (SAMPLE_WIDTH * self._rate)
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        await proc.stdin.wait_closed()
                await asyncio.wait_for(proc.wait(), timeout=max(remaining, 0.0) + _FINISH_MARGIN_SECONDS)
            except TimeoutError:
                _LOGGER.warning("aplay still running %.1fs after its audio should have ended; killed", remaining)
                self._proc = None
                await _terminate(proc)
                break
            except BaseException:  # cancelled (hang-up) or anything else: aplay must not outlive us
                self._proc = None
                await _terminate(proc)
                raise
            if proc is not self._proc:
                continue  # paused while it played out: killed, the rest plays after the resume
            self._proc = None
            if proc.returncode != 0:
                raise PlaybackError(f"aplay exited with {proc.returncode}: {await _read_tail(proc)}")
            break
        self._rate = 0

    async def kill(self) -> None:
        """Terminate aplay mid-sentence and reap it; the utterance is over (a pause with it)."""
        self.history.cut(time.monotonic())
        self._rate, self._paused = 0, False
        self._resumed.set()
        self._pcm = bytearray()
        for task in list(self._background):
            if task.get_name() == "aplay-catch-up":
                task.cancel()
        proc, self._proc = self._proc, None
        if proc is not None:
            await _terminate(proc)

    async def close(self) -> None:
        """Kill any player still running."""
        await self.kill()

    @property
    def played_seconds(self) -> float:
        """Seconds of the utterance heard: wall time aplay has played, pauses left out (an estimate: aplay's
        buffer is not asked)."""
        if self._rate <= 0:
            return 0.0
        return self._position() / (SAMPLE_WIDTH * self._rate)

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
