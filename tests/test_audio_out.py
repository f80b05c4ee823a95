"""The earpiece: real aplay playing into ALSA's file device, and the WAV file sink."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from common.wav import read_wav_pcm16
from pi_client.audio.playback import AplaySink, PlaybackError, WavFileSink
from tests.alsa_rig import AlsaRig
from tests.helpers import tone_pcm16
from tests.phone_rig import alive

TIMEOUT = 20.0


def rig_env(rig: AlsaRig) -> dict[str, str]:
    return {"ALSA_CONFIG_PATH": rig.env()["ALSA_CONFIG_PATH"]}


def same_samples(a: bytes, b: bytes) -> bool:
    """Equal up to one step (read_wav_pcm16 goes through float32)."""
    x, y = np.frombuffer(a, dtype="<i2").astype(int), np.frombuffer(b, dtype="<i2").astype(int)
    return x.size == y.size and int(np.abs(x - y).max()) <= 1


def dominant_frequency(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[spectrum.argmax()])


def test_aplay_plays_a_stream_fed_in_pieces(alsa_rig: AlsaRig) -> None:
    audio = tone_pcm16(1.0, 24000)

    async def play() -> None:
        sink = AplaySink(env=rig_env(alsa_rig))
        await sink.start(24000)
        for i in range(0, len(audio), 4800):  # 0.1 s pieces, as a network stream delivers them
            await sink.write(audio[i : i + 4800])
        await asyncio.wait_for(sink.finish(), TIMEOUT)
        assert sink.pid is None

    asyncio.run(play())
    played, rate = read_wav_pcm16(str(alsa_rig.outfile))
    assert rate == 24000
    # aplay pads the last period with silence; every sample we sent is there, in order.
    assert len(audio) <= len(played) <= len(audio) + 24000 * 2 // 5
    assert same_samples(played[: len(audio)], audio)
    assert abs(dominant_frequency(played, rate) - 440.0) < 5


def test_a_second_utterance_may_change_the_rate(alsa_rig: AlsaRig) -> None:
    async def play() -> None:
        sink = AplaySink(env=rig_env(alsa_rig))
        await sink.start(24000)
        await sink.write(tone_pcm16(0.3, 24000))
        await asyncio.wait_for(sink.finish(), TIMEOUT)
        await sink.start(22050)
        await sink.write(tone_pcm16(0.5, 22050, freq=880.0))
        await asyncio.wait_for(sink.finish(), TIMEOUT)

    asyncio.run(play())
    played, rate = read_wav_pcm16(str(alsa_rig.outfile))
    assert rate == 22050
    assert abs(dominant_frequency(played, rate) - 880.0) < 5


def test_kill_stops_aplay_at_once_and_reaps_it(alsa_rig: AlsaRig) -> None:
    async def play() -> int:
        sink = AplaySink(env=rig_env(alsa_rig))
        await sink.start(16000)
        await sink.write(tone_pcm16(0.2, 16000))
        pid = sink.pid
        assert pid is not None and alive(pid)  # still waiting for the rest of the stream
        await asyncio.wait_for(sink.kill(), TIMEOUT)
        await sink.kill()  # idempotent
        return pid

    pid = asyncio.run(play())
    assert not alive(pid)


def test_a_player_that_cannot_open_its_device_is_a_clear_error(alsa_rig: AlsaRig) -> None:
    async def play() -> None:
        sink = AplaySink(device="no_such_device", env=rig_env(alsa_rig))
        await sink.start(16000)
        await sink.write(tone_pcm16(0.5, 16000))
        await asyncio.wait_for(sink.finish(), TIMEOUT)

    with pytest.raises(PlaybackError, match="aplay"):
        asyncio.run(play())


def test_wav_file_sink_keeps_the_first_rate_and_resamples_later_utterances(tmp_path: Path) -> None:
    path = tmp_path / "out" / "r.wav"

    async def play() -> WavFileSink:
        sink = WavFileSink(path)
        await sink.start(24000)
        await sink.write(tone_pcm16(1.0, 24000))
        await sink.finish()
        await sink.start(22050)
        await sink.write(tone_pcm16(1.0, 22050, freq=880.0))
        await sink.finish()
        await sink.close()
        return sink

    sink = asyncio.run(play())
    pcm, rate = read_wav_pcm16(str(path))
    assert (rate, sink.utterances) == (24000, 2)
    assert abs(len(pcm) / 2 / rate - 2.0) < 0.01
    half = len(pcm) // 2 - len(pcm) // 2 % 2
    assert abs(dominant_frequency(pcm[:half], rate) - 440.0) < 5
    assert abs(dominant_frequency(pcm[half:], rate) - 880.0) < 5


def test_wav_file_sink_writes_an_empty_file_when_nothing_played(tmp_path: Path) -> None:
    path = tmp_path / "r.wav"
    asyncio.run(WavFileSink(path).close())
    pcm, _ = read_wav_pcm16(str(path))
    assert pcm == b"" and os.path.getsize(path) == 44


def aplay_children() -> list[int]:
    """This process's aplay children, zombies included (an unreaped one is a leak too)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if comm.endswith("(aplay") and int(rest.split()[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("rate", [0, 4000, 96000])
def test_a_rate_no_player_can_play_is_refused_before_aplay_starts(alsa_rig: AlsaRig, rate: int) -> None:
    async def play() -> None:
        sink = AplaySink(env=rig_env(alsa_rig))
        try:
            with pytest.raises(PlaybackError, match=f"{rate} Hz"):
                await sink.start(rate)
            assert sink.pid is None
            with pytest.raises(PlaybackError, match=f"{rate} Hz"):
                await WavFileSink(alsa_rig.conf.parent / "r.wav").start(rate)
        finally:
            await sink.close()

    asyncio.run(play())
    assert aplay_children() == []
