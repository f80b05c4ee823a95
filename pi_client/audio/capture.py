"""Speech in: audio sources yielding 16 kHz mono PCM16 frames of 512 samples (Silero's frame).

The microphone (:class:`SoundDeviceSource`) and a WAV file (:class:`WavFileSource`) yield the
same frames, so file mode goes through exactly the listening path the handset uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from common.config import AudioConfig
from common.wav import SAMPLE_WIDTH, read_wav_pcm16

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""Rate of every frame a source yields, in Hz (Whisper and Silero both want it)."""
BLOCK_SAMPLES = 512
"""Samples per frame (32 ms at 16 kHz)."""
_QUEUE_SECONDS = 5.0
"""Captured audio the microphone queue holds before it drops blocks, in seconds."""


class AudioInputError(RuntimeError):
    """The microphone cannot be opened; the message names the setting."""


class AudioSource(ABC):
    """Yields PCM16 mono frames at 16 kHz, each ``block_samples`` long."""

    block_samples: int = BLOCK_SAMPLES

    @abstractmethod
    def frames(self) -> AsyncIterator[bytes]:
        """An async iterator of frames; it ends when the source does (a file), or never (a microphone)."""

    @abstractmethod
    def close(self) -> None:
        """Stop producing frames; an iterator in progress ends."""


class _Reblocker:
    """Cuts a byte stream into fixed-size frames."""

    def __init__(self, frame_bytes: int) -> None:
        self._frame_bytes = frame_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        whole = len(self._buffer) - len(self._buffer) % self._frame_bytes
        out = [bytes(self._buffer[i : i + self._frame_bytes]) for i in range(0, whole, self._frame_bytes)]
        del self._buffer[:whole]
        return out

    def flush(self) -> bytes | None:
        """The last partial frame padded with silence, or None when nothing is left."""
        if not self._buffer:
            return None
        frame = bytes(self._buffer) + b"\0" * (self._frame_bytes - len(self._buffer))
        self._buffer.clear()
        return frame


def _device(spec: str | None) -> int | str | None:
    if spec is None or spec == "":
        return None
    return int(spec) if spec.isdigit() else spec


class SoundDeviceSource(AudioSource):
    """The microphone, through sounddevice (PortAudio); resampled to 16 kHz if captured otherwise."""

    def __init__(self, cfg: AudioConfig, block_samples: int = BLOCK_SAMPLES) -> None:
        self._cfg = cfg
        self.block_samples = block_samples
        self._stream: Any = None
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._closing = False
        self.dropped_blocks = 0
        """Blocks lost because the consumer fell behind (logged, not fatal)."""

    async def frames(self) -> AsyncIterator[bytes]:
        """Open the input stream and yield frames until closed or cancelled."""
        import sounddevice

        loop = asyncio.get_running_loop()
        rate = self._cfg.sample_rate
        capture_block = max(1, round(rate * self._cfg.block_seconds))
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=max(4, int(_QUEUE_SECONDS * rate / capture_block)))
        self._queue = queue
        self._closing = False

        def warn_dropped() -> None:
            _LOGGER.warning("Capture queue full: %d blocks dropped so far", self.dropped_blocks)

        def drop() -> None:
            self.dropped_blocks += 1
            if self.dropped_blocks == 1 or self.dropped_blocks % 100 == 0:
                loop.call_soon_threadsafe(warn_dropped)

        def deliver(data: bytes, status: Any) -> None:
            if status:
                _LOGGER.debug("Capture status: %s", status)
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                drop()

        def callback(indata: Any, _frames: int, _time: Any, status: Any) -> None:
            # PortAudio's thread: copy and hand off, nothing else (a blocked callback drops audio).
            if queue.full():
                # The listener is behind: drop the block here rather than wake the loop only to drop it.
                # A flood of wake-ups (a device without real-time pacing) fills asyncio's self-pipe, and a
                # signal arriving then (systemd's SIGTERM) is lost: the phone would not stop.
                drop()
                return
            loop.call_soon_threadsafe(deliver, bytes(indata), status)

        device = _device(self._cfg.input_device)
        try:
            stream = sounddevice.RawInputStream(
                samplerate=rate, blocksize=capture_block, device=device, channels=1, dtype="int16", callback=callback
            )
        except (sounddevice.PortAudioError, ValueError) as err:  # ValueError: no device matches the name
            where = self._cfg.input_device or "the default device"
            raise AudioInputError(f"pi.audio.input_device: cannot capture from {where} at {rate} Hz: {err}") from err
        self._stream = stream
        reblocker = _Reblocker(self.block_samples * SAMPLE_WIDTH)
        resampler = None
        if rate != SAMPLE_RATE:
            import soxr

            resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="int16")
        stream.start()
        _LOGGER.debug("Capture started on %s at %d Hz", self._cfg.input_device or "the default device", rate)
        try:
            while (data := await queue.get()) is not None:
                if resampler is not None:
                    import numpy as np

                    data = resampler.resample_chunk(np.frombuffer(data, dtype="<i2")).astype("<i2").tobytes()
                for frame in reblocker.feed(data):
                    if self._closing:
                        return
                    yield frame
        finally:
            self._queue = None
            self._stop()

    @property
    def running(self) -> bool:
        """The input stream is open (between the first frame request and close/cancel)."""
        return self._stream is not None

    def _stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()
            stream.close()
            _LOGGER.debug("Capture stopped")

    def close(self) -> None:
        """End the frame iterator (on the loop's thread) and release the device."""
        self._closing = True
        self._stop()  # the device stops now (hang-up), not when the reader next runs
        queue = self._queue
        if queue is None:
            return
        while queue.full():
            queue.get_nowait()  # closing: a queued block no longer matters
        queue.put_nowait(None)  # wakes an iterator waiting for the next block


def _read_pcm16(path: Path) -> bytes:
    """A WAV as 16 kHz mono PCM16: bit-exact when it already is, else mixed down and resampled."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        if info.samplerate == SAMPLE_RATE and info.channels == 1 and info.subtype == "PCM_16":
            data, _ = soundfile.read(str(path), dtype="int16")
            return bytes(data.astype("<i2").tobytes())
    except soundfile.LibsndfileError as err:
        raise ValueError(f"cannot read {path} as audio: {err}") from err
    pcm, _ = read_wav_pcm16(str(path), SAMPLE_RATE)
    return pcm


class WavFileSource(AudioSource):
    """A WAV file (any rate, any channels) played as if it were the microphone, then the end."""

    def __init__(self, path: str | Path, block_samples: int = BLOCK_SAMPLES, realtime: bool = False) -> None:
        self.path = Path(path)
        self.block_samples = block_samples
        self.realtime = realtime
        self._closed = False

    async def frames(self) -> AsyncIterator[bytes]:
        """Yield the file's frames (the last one padded with silence); paced like a microphone if realtime."""
        pcm = await asyncio.to_thread(_read_pcm16, self.path)
        reblocker = _Reblocker(self.block_samples * SAMPLE_WIDTH)
        frames = reblocker.feed(pcm)
        last = reblocker.flush()
        if last is not None:
            frames.append(last)
        frame_seconds = self.block_samples / SAMPLE_RATE
        started = time.monotonic()
        for i, frame in enumerate(frames):
            if self._closed:
                return
            if self.realtime:
                await asyncio.sleep(max(0.0, started + (i + 1) * frame_seconds - time.monotonic()))
            else:
                await asyncio.sleep(0)  # let the loop breathe between frames
            yield frame

    def close(self) -> None:
        """End the frame iterator at the next frame."""
        self._closed = True
