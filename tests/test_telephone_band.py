"""The telephone-band earpiece: white noise in, 300-3400 Hz out, judged by its spectrum."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from common.wav import read_wav_pcm16
from pi_client.audio.playback import WavFileSink
from pi_client.audio.telephone_band import TelephoneBandSink
from tests.tone_check import samples


def band_db(x: np.ndarray, rate: int, low: float, high: float) -> float:
    """Mean power density between ``low`` and ``high`` Hz, in dB."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    return float(10 * np.log10(spectrum[(freqs >= low) & (freqs < high)].mean()))


@pytest.mark.parametrize("rate", [16000, 22050, 24000])
def test_noise_through_the_earpiece_keeps_300_to_3400_hz_and_loses_the_rest(rate: int, tmp_path: Path) -> None:
    noise = (np.random.default_rng(1).normal(0, 3000, 2 * rate)).astype("<i2").tobytes()
    out = tmp_path / "ear.wav"

    async def play() -> None:
        sink = TelephoneBandSink(WavFileSink(out))
        await sink.start(rate)
        for i in range(0, len(noise), 2 * 1001 + 1):  # odd chunk sizes: samples split across writes
            await sink.write(noise[i : i + 2 * 1001 + 1])
        await sink.finish()
        await sink.close()

    asyncio.run(play())
    pcm, got_rate = read_wav_pcm16(str(out))
    assert got_rate == rate and len(pcm) == len(noise) + 2 * ((int(3.3 * rate / 150) | 1) - 1) // 2
    y = samples(pcm)
    passband = band_db(y, rate, 500, 3000)
    assert band_db(samples(noise), rate, 500, 3000) - passband == pytest.approx(0, abs=1.0)  # untouched
    assert passband - band_db(y, rate, 20, 150) > 30  # the hum and rumble a phone line never carried
    assert passband - band_db(y, rate, 4000, rate / 2) > 30  # nor the air above 3.4 kHz
