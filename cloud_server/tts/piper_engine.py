"""The fallback engine: the shared local voice (Piper, else espeak-ng) behind the TTS seam."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from cloud_server.tts.base import TTSEngine, TTSError, VoiceSpec
from common.speech import LocalVoice
from common.wav import float_to_pcm16, pcm16_to_float

_LOGGER = logging.getLogger(__name__)

CORES_PER_PLACE = 1
"""Cores each Piper sentence gets when ``server.tts.piper.parallel`` is 0 (auto).

Measured on a 2-core VM shared with other work (docs/PERFORMANCE.md, the load section): one sentence
on 2 threads is faster than on 1 when the machine is quiet, but under load onnxruntime's 2-thread
runs wait for whichever thread was descheduled, and two 1-thread sentences side by side gave one
phone and eight phones alike an earlier first audio."""
MAX_AUTO_PLACES = 8
"""At most this many places in auto (the default reply capacity, ``server.limits.queue_depth``): on
a many-core host each sentence then gets several cores instead of places no reply would use."""


def piper_places(parallel: int, cores: int) -> tuple[int, int]:
    """(sentences at once, onnxruntime threads per sentence) from ``server.tts.piper.parallel`` and the cores.

    Each sentence gets its share of the cores, so the runs do not oversubscribe them.
    """
    if parallel < 0:
        raise ValueError(f"tts.piper.parallel: expected 0 (auto) or more, got {parallel}")
    places = parallel or max(1, min(cores // CORES_PER_PLACE, MAX_AUTO_PLACES))
    return places, max(1, cores // places)


class LocalVoiceEngine(TTSEngine):
    """Speaks with a LocalVoice; ignores the voice clip (it is the voice of last resort).

    ``sample_rate`` may differ from the voice's own: chunks are then resampled, so a reply that
    switches to this engine mid-stream keeps the stream's rate.
    """

    def __init__(self, voice: LocalVoice, sample_rate: int | None = None, degraded_reason: str | None = None) -> None:
        self.voice = voice
        self.name = voice.name
        self.sample_rate = sample_rate or voice.sample_rate
        self.device = "cpu"
        self.degraded = degraded_reason is not None
        self.degraded_reason = degraded_reason

    def synthesize(self, text: str, voice: VoiceSpec, cancel: threading.Event | None = None) -> Iterator[bytes]:
        """Speak ``text`` in the local voice, chunk by chunk; raise TTSError on failure."""
        resampler = _Resampler(self.voice.sample_rate, self.sample_rate)
        try:
            for chunk in self.voice.synthesize(text, cancel):
                out = resampler.feed(chunk)
                if out:
                    yield out
            tail = resampler.flush()
            if tail:
                yield tail
        except Exception as err:
            _LOGGER.exception("Local voice %s failed", self.name)
            raise TTSError(f"{self.name} could not speak: {err}") from err


class _Resampler:
    """A streaming PCM16 resampler (soxr keeps state across chunks, so chunk joins do not click)."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self._stream = None
        if src_rate != dst_rate:
            import soxr

            self._stream = soxr.ResampleStream(src_rate, dst_rate, 1, dtype="float32")

    def feed(self, pcm: bytes) -> bytes:
        """Resample the next chunk (may return less than it got: soxr holds some back)."""
        if self._stream is None:
            return pcm
        return float_to_pcm16(self._stream.resample_chunk(pcm16_to_float(pcm)))

    def flush(self) -> bytes:
        """What soxr held back, at the end of the text."""
        if self._stream is None:
            return b""
        import numpy as np

        return float_to_pcm16(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
