"""Audio sources: real sounddevice capture from an ALSA device fed by a file (in a subprocess), and WAV files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from common.wav import pcm16_to_float, read_wav_pcm16, write_wav
from pi_client.audio.capture import BLOCK_SAMPLES, SAMPLE_RATE, WavFileSource
from tests.alsa_rig import AlsaRig
from tests.fixtures_pi import PI_RATE, SPEECH_TEXT, silence, speech_extent, white_noise

FRAME_BYTES = BLOCK_SAMPLES * 2

# Runs in a fresh interpreter whose ALSA default is the rig: capture N frames, write them out.
_CAPTURE = """
import asyncio, sys
from common.config import AudioConfig
from pi_client.audio.capture import SoundDeviceSource

async def main(n, out, rate):
    source = SoundDeviceSource(AudioConfig(sample_rate=rate))
    frames = []
    async def collect():
        async for frame in source.frames():
            frames.append(frame)
            if len(frames) == n:
                source.close()  # the iterator must end by itself after close()
    await asyncio.wait_for(collect(), timeout=30)
    assert len(frames) == n, len(frames)
    assert {len(f) for f in frames} == {source.block_samples * 2}
    open(out, "wb").write(b"".join(frames))

asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""

# Capture + endpointing exactly as the phone does it, from the rig's "microphone".
_LISTEN = """
import asyncio, json, sys
from common.config import AudioConfig, VADConfig
from pi_client.audio.capture import SoundDeviceSource
from pi_client.turns.endpoint import listen
from pi_client.turns.vad import SileroVad

async def main(out):
    source = SoundDeviceSource(AudioConfig())
    utt = await asyncio.wait_for(listen(source, SileroVad(), VADConfig()), timeout=30)
    open(out, "wb").write(utt.pcm)
    print(json.dumps({"speech_seconds": utt.speech_seconds}))

asyncio.run(main(sys.argv[1]))
"""

# Hang-up while listening: cancelling listen() must close the input stream at once.
_CANCEL = """
import asyncio
from common.config import AudioConfig, VADConfig
from pi_client.audio.capture import SoundDeviceSource
from pi_client.turns.endpoint import listen
from pi_client.turns.vad import SileroVad

async def main():
    source = SoundDeviceSource(AudioConfig())
    task = asyncio.create_task(listen(source, SileroVad(), VADConfig(no_speech_timeout_seconds=600)))
    for _ in range(500):
        await asyncio.sleep(0.01)
        if source.running:
            break
    assert source.running and not task.done()
    task.cancel()
    try:
        await asyncio.wait_for(task, timeout=5)
    except asyncio.CancelledError:
        pass
    assert not source.running
    print("closed")

asyncio.run(main())
"""

# A consumer that stalls: the device (unpaced here) overruns the bounded queue; capture must go on.
_STALL = """
import asyncio, json, logging, sys
from common.config import AudioConfig
from pi_client.audio.capture import SoundDeviceSource

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

async def main(out):
    source = SoundDeviceSource(AudioConfig())
    frames = source.frames()
    first = [await anext(frames)]
    await asyncio.sleep(1.0)  # the VAD fell behind
    more = [await asyncio.wait_for(anext(frames), timeout=5) for _ in range(100)]
    await frames.aclose()
    open(out, "wb").write(b"".join(first + more))
    print(json.dumps({"dropped": source.dropped_blocks, "running": source.running}))

asyncio.run(main(sys.argv[1]))
"""

_BAD_DEVICE = """
import asyncio
from common.config import AudioConfig
from pi_client.audio.capture import AudioInputError, SoundDeviceSource

async def main():
    try:
        async for _ in SoundDeviceSource(AudioConfig(input_device="no-such-microphone")).frames():
            break
    except AudioInputError as err:
        print(err)

asyncio.run(main())
"""


def test_sounddevice_capture_matches_the_fed_samples(alsa_rig: AlsaRig, tmp_path: Path) -> None:
    fed = white_noise(2.0, 0.2, seed=7)  # every sample distinct enough that a shift or a gap shows
    alsa_rig.feed(fed)
    n = len(fed) // FRAME_BYTES
    out = tmp_path / "captured.raw"
    alsa_rig.run_python(_CAPTURE, str(n), str(out), str(SAMPLE_RATE))
    captured = out.read_bytes()
    assert len(captured) == n * FRAME_BYTES
    assert captured == fed[: n * FRAME_BYTES]


def test_sounddevice_capture_resamples_a_48k_device(alsa_rig: AlsaRig, tmp_path: Path) -> None:
    t = np.arange(48000 * 2) / 48000
    alsa_rig.feed((np.sin(2 * np.pi * 440 * t) * 0.5 * 32767).astype("<i2").tobytes())  # the device runs at 48 kHz
    n = 40  # 1.28 s at 16 kHz
    out = tmp_path / "captured.raw"
    alsa_rig.run_python(_CAPTURE, str(n), str(out), "48000")
    x = pcm16_to_float(out.read_bytes())[2000:]  # past the resampler's start-up
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    peak_hz = np.argmax(spectrum) * PI_RATE / x.size
    assert peak_hz == pytest.approx(440, abs=5)  # still a 440 Hz tone: the frames really are 16 kHz
    assert np.sqrt(np.mean(x**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_sounddevice_capture_then_listen_finds_the_speech(
    alsa_rig: AlsaRig, piper_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    speech = piper_speech(SPEECH_TEXT)
    # The file device has no real-time pacing, so the whole feed must fit the capture queue (5 s).
    fed = silence(0.6) + speech + silence(1.2)
    alsa_rig.feed(fed)
    out = tmp_path / "utterance.raw"
    proc = alsa_rig.run_python(_LISTEN, str(out))
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    pcm = out.read_bytes()
    offset = fed.find(pcm)
    assert offset >= 0 and offset % FRAME_BYTES == 0  # a contiguous slice of what the microphone heard
    first, last = speech_extent(speech)
    assert offset / 2 / PI_RATE < 0.6 + first  # starts before the first syllable (pre-roll)
    assert (offset + len(pcm)) / 2 / PI_RATE > 0.6 + last  # ends after the last one
    assert stats["speech_seconds"] == pytest.approx(last - first, abs=0.35)


def test_a_stalled_consumer_drops_blocks_and_capture_goes_on(alsa_rig: AlsaRig, tmp_path: Path) -> None:
    fed = white_noise(12.0, 0.2, seed=11)  # more than the 5 s queue
    alsa_rig.feed(fed)
    out = tmp_path / "captured.raw"
    proc = alsa_rig.run_python(_STALL, str(out))
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["dropped"] > 0
    assert not stats["running"]  # closing the iterator released the device
    assert "blocks dropped" in proc.stderr  # logged, not fatal
    captured = out.read_bytes()
    assert captured == fed[: len(captured)]  # what was kept is the oldest audio, in order, without gaps
    assert len(captured) == 101 * FRAME_BYTES


def test_the_rig_playback_side_writes_what_aplay_plays(alsa_rig: AlsaRig, tmp_path: Path) -> None:
    """The rig's earpiece: aplay into the default device lands in a WAV file (used by the playback tests)."""
    import subprocess

    pcm = white_noise(0.5, 0.2, seed=13)
    wav = tmp_path / "reply.wav"
    write_wav(str(wav), pcm, PI_RATE)
    subprocess.run(["aplay", "-q", str(wav)], env=alsa_rig.env(), check=True, timeout=30)
    played, rate = read_wav_pcm16(alsa_rig.outfile.read_bytes())
    assert rate == PI_RATE
    assert pcm[2000:6000] in alsa_rig.outfile.read_bytes()
    assert len(played) >= len(pcm)


def test_an_unknown_input_device_names_the_setting(alsa_rig: AlsaRig) -> None:
    message = alsa_rig.run_python(_BAD_DEVICE).stdout
    assert message.startswith("pi.audio.input_device: cannot capture from no-such-microphone")


def test_cancelling_listen_closes_the_microphone(alsa_rig: AlsaRig) -> None:
    alsa_rig.feed(silence(3.0))
    assert alsa_rig.run_python(_CANCEL).stdout.strip() == "closed"


def _collect(source: WavFileSource) -> list[bytes]:
    async def run() -> list[bytes]:
        return [frame async for frame in source.frames()]

    return asyncio.run(asyncio.wait_for(run(), timeout=30))


def test_wav_source_resamples_22050_to_16k_blocks(piper_speech_22k: Path) -> None:
    frames = _collect(WavFileSource(piper_speech_22k))
    assert {len(f) for f in frames} == {FRAME_BYTES}
    reference, rate = read_wav_pcm16(str(piper_speech_22k))
    seconds = len(reference) / 2 / rate
    assert len(frames) == -(-round(seconds * SAMPLE_RATE) // BLOCK_SAMPLES)  # the last frame padded, not lost
    resampled, _ = read_wav_pcm16(str(piper_speech_22k), SAMPLE_RATE)
    ours = pcm16_to_float(b"".join(frames))[: len(resampled) // 2]
    assert np.corrcoef(ours, pcm16_to_float(resampled))[0, 1] > 0.999


def test_wav_source_mixes_stereo_down(tmp_path: Path) -> None:
    import soundfile

    left = np.sin(2 * np.pi * 300 * np.arange(44100) / 44100).astype(np.float32) * 0.4
    path = tmp_path / "stereo.wav"
    soundfile.write(str(path), np.stack([left, left], axis=1), 44100, subtype="FLOAT")
    x = pcm16_to_float(b"".join(_collect(WavFileSource(path))))
    assert x.size == -(-16000 // BLOCK_SAMPLES) * BLOCK_SAMPLES
    assert np.abs(x[:15000]).max() == pytest.approx(0.4, abs=0.01)


def test_wav_source_16k_is_bit_exact_and_realtime_gives_the_same_frames(tmp_path: Path) -> None:
    pcm = white_noise(0.3, 0.3, seed=5)
    path = tmp_path / "q.wav"
    write_wav(str(path), pcm, PI_RATE)
    fast = _collect(WavFileSource(path))
    assert b"".join(fast)[: len(pcm)] == pcm
    assert _collect(WavFileSource(path, realtime=True)) == fast


def test_wav_source_close_ends_the_iteration(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    write_wav(str(path), silence(5.0), PI_RATE)
    source = WavFileSource(path)

    async def run() -> int:
        count = 0
        async for _ in source.frames():
            count += 1
            if count == 3:
                source.close()
        return count

    assert asyncio.run(asyncio.wait_for(run(), timeout=10)) == 3


def test_wav_source_rejects_a_file_that_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    with pytest.raises(ValueError, match="cannot read"):
        _collect(WavFileSource(path))
