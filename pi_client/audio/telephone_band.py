"""The sound of a telephone line: everything the earpiece plays, band-passed to 300-3400 Hz.

A linear-phase FIR filter (windowed sinc, Hamming), applied by ``numpy.convolve`` chunk by chunk
with the last ``taps - 1`` input samples carried over, so a stream filters seamlessly whatever its
chunk sizes; the filter is made afresh for each utterance's sample rate. Its delay is half its
length (about 10 ms); ``finish`` flushes that tail so no sound is lost. Pure numpy: nothing new on the Pi.
"""

from __future__ import annotations

import numpy as np

from pi_client.audio.playback import AudioSink, SinkWrapper

LOW_HZ = 300.0
HIGH_HZ = 3400.0
TRANSITION_HZ = 150.0
"""Width of each band edge; the filter's length follows from it (Hamming: 3.3 / width)."""


def band_pass_taps(sample_rate: int, low: float = LOW_HZ, high: float = HIGH_HZ) -> np.ndarray:
    """FIR coefficients of the band-pass at ``sample_rate`` (an odd count, unity gain mid-band)."""
    count = int(3.3 * sample_rate / TRANSITION_HZ) | 1
    n = np.arange(count) - (count - 1) / 2
    high = min(high, 0.45 * sample_rate)  # a low-rate stream: keep below its Nyquist frequency

    def low_pass(cutoff: float) -> np.ndarray:
        return np.asarray(2 * cutoff / sample_rate * np.sinc(2 * cutoff / sample_rate * n))

    return (low_pass(high) - low_pass(low)) * np.hamming(count)


class BandPass:
    """A streaming band-pass over PCM16 mono at one sample rate."""

    def __init__(self, sample_rate: int) -> None:
        self._taps = band_pass_taps(sample_rate)
        self._history = np.zeros(self._taps.size - 1)

    @property
    def delay_samples(self) -> int:
        return (self._taps.size - 1) // 2

    def process(self, pcm: bytes) -> bytes:
        """The filtered audio, as many samples as came in (delayed by :attr:`delay_samples`)."""
        x = np.concatenate((self._history, np.frombuffer(pcm, dtype="<i2").astype(np.float64)))
        y = np.convolve(x, self._taps, mode="valid")
        self._history = x[x.size - self._history.size :]
        return np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()


class TelephoneBandSink(SinkWrapper):
    """An earpiece that sounds like a telephone line: ``inner`` gets every utterance band-passed."""

    def __init__(self, inner: AudioSink) -> None:
        super().__init__(inner)
        self._filter: BandPass | None = None
        self._carry = b""

    async def start(self, sample_rate: int) -> None:
        await self._inner.start(sample_rate)
        self._filter, self._carry = BandPass(sample_rate), b""

    async def write(self, pcm: bytes) -> None:
        data, self._carry = self._carry + pcm, b""
        if len(data) % 2:  # keep whole samples
            data, self._carry = data[:-1], data[-1:]
        if self._filter is not None and data:
            await self._inner.write(self._filter.process(data))

    async def finish(self) -> None:
        if self._filter is not None:  # the filter's delay: play out the last sound it holds
            await self._inner.write(self._filter.process(bytes(2 * self._filter.delay_samples)))
            self._filter = None
        await self._inner.finish()

    async def kill(self) -> None:
        self._filter = None
        await self._inner.kill()
