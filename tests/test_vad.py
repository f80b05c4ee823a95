"""Real Silero VAD (faster-whisper's ONNX model) and listen() on Piper speech with silence and noise around it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from common.config import VADConfig
from common.wav import write_wav
from pi_client.audio.capture import BLOCK_SAMPLES, WavFileSource
from pi_client.turns.endpoint import Utterance, listen
from pi_client.turns.vad import SileroVad, VadError
from tests.fixtures_pi import PI_RATE, SPEECH_TEXT, mix, silence, speech_extent, white_noise

FRAME_SECONDS = BLOCK_SAMPLES / PI_RATE
CFG = VADConfig()  # the shipped defaults: 0.6 s trailing silence, 0.25 s min speech, 0.3 s pre-roll
TOLERANCE = 0.15  # seconds: a few 32 ms frames of model latency either side


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def _frames(pcm: bytes) -> list[bytes]:
    step = BLOCK_SAMPLES * 2
    pcm = pcm + b"\0" * (-len(pcm) % step)
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def _listen(vad: SileroVad, pcm: bytes, tmp_path: Path, cfg: VADConfig = CFG) -> Utterance | None:
    path = tmp_path / "input.wav"
    write_wav(str(path), pcm, PI_RATE)
    return asyncio.run(asyncio.wait_for(listen(WavFileSource(path), vad, cfg), timeout=60))


def test_probabilities_follow_speech_and_state_carries_over(
    vad: SileroVad, piper_speech: Callable[[str], bytes]
) -> None:
    speech = piper_speech(SPEECH_TEXT)
    frames = _frames(silence(1.0) + speech + silence(1.0))
    vad.reset()
    one_by_one = [vad.speech_probability(f) for f in frames]
    vad.reset()
    batched = vad.speech_probabilities(frames)
    assert one_by_one == pytest.approx(batched, abs=1e-5)  # the recurrent state is carried between calls
    probs = np.array(one_by_one)
    lead = round(1.0 / FRAME_SECONDS)
    assert probs[: lead - 2].max() < 0.1  # silence
    assert np.mean(probs[lead + 5 : -lead - 5] > CFG.threshold) > 0.8  # mostly speech in the middle
    assert probs[-lead + 10 :].max() < 0.2  # silence again once the model has caught up


def test_vad_rejects_frames_of_the_wrong_size(vad: SileroVad) -> None:
    with pytest.raises(VadError, match="512 samples"):
        vad.speech_probability(b"\0" * 1000)


@pytest.mark.parametrize("noise_rms", [0.0, 0.01, 0.03], ids=["clean", "noise-0.01", "noise-0.03"])
def test_listen_finds_the_utterance_boundaries(
    vad: SileroVad, piper_speech: Callable[[str], bytes], tmp_path: Path, noise_rms: float
) -> None:
    speech = piper_speech(SPEECH_TEXT)
    first, last = speech_extent(speech)
    lead, trail = 1.5, 2.0
    clean = silence(lead) + speech + silence(trail)
    recording = mix(clean, white_noise(len(clean) / 2 / PI_RATE, noise_rms)) if noise_rms else clean
    utt = _listen(vad, recording, tmp_path)
    assert utt is not None
    offset = recording.find(utt.pcm)  # the utterance is a contiguous, frame-aligned slice of the input
    assert offset >= 0 and offset % (BLOCK_SAMPLES * 2) == 0
    start = offset / 2 / PI_RATE
    end = start + len(utt.pcm) / 2 / PI_RATE
    true_start, true_end = lead + first, lead + last
    # The pre-roll keeps audio from before the first syllable.
    assert start == pytest.approx(true_start - CFG.preroll_seconds, abs=TOLERANCE)
    assert start < true_start
    # It ends one trailing silence after the speech, not at the end of the file.
    assert end == pytest.approx(true_end + CFG.trailing_silence_seconds, abs=TOLERANCE)
    assert utt.speech_seconds == pytest.approx(last - first, abs=2 * TOLERANCE + 0.1)
    assert utt.endpoint_delay_seconds == pytest.approx(CFG.trailing_silence_seconds, abs=FRAME_SECONDS)


def test_pure_noise_is_no_utterance(vad: SileroVad, tmp_path: Path) -> None:
    noise = white_noise(4.0, 0.05, seed=1)
    assert _listen(vad, noise, tmp_path) is None  # the file ends without speech
    short_timeout = VADConfig(no_speech_timeout_seconds=2.0)
    assert _listen(vad, noise + noise, tmp_path, short_timeout) is None  # gives up after 2 s


def test_a_click_and_a_short_syllable_are_ignored(
    vad: SileroVad, piper_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    click = np.zeros(round(0.02 * PI_RATE), dtype="<i2")
    click[::2] = 20000
    click[1::2] = -20000
    speech = piper_speech(SPEECH_TEXT)
    first, _ = speech_extent(speech)
    syllable = speech[round((first + 0.05) * PI_RATE) * 2 : round((first + 0.2) * PI_RATE) * 2]  # 150 ms of voice
    recording = silence(1.0) + click.tobytes() + silence(1.0) + syllable + silence(1.5)
    vad.reset()
    probs = vad.speech_probabilities(_frames(recording))
    assert max(probs) > CFG.threshold  # the VAD does hear the syllable...
    assert _listen(vad, recording, tmp_path) is None  # ...but it is shorter than min_speech_seconds


def test_source_ending_mid_speech_returns_what_was_heard(
    vad: SileroVad, piper_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    speech = piper_speech(SPEECH_TEXT)
    recording = silence(1.0) + speech[: len(speech) // 4 * 2]  # the file stops mid-sentence
    utt = _listen(vad, recording, tmp_path)
    assert utt is not None
    assert recording[-3000:] in utt.pcm  # everything up to the end of the audio is kept
    assert utt.speech_seconds > 0.5


def test_max_utterance_cuts_long_speech(vad: SileroVad, piper_speech: Callable[[str], bytes], tmp_path: Path) -> None:
    speech = piper_speech(SPEECH_TEXT)
    cfg = VADConfig(max_utterance_seconds=1.0)
    utt = _listen(vad, silence(1.0) + speech + silence(1.0), tmp_path, cfg)
    assert utt is not None
    assert utt.speech_seconds <= 1.0
    assert len(utt.pcm) / 2 / PI_RATE <= 1.0 + cfg.preroll_seconds + FRAME_SECONDS


def test_cancelling_listen_leaves_no_task_behind(vad: SileroVad, tmp_path: Path) -> None:
    path = tmp_path / "quiet.wav"
    write_wav(str(path), silence(30.0), PI_RATE)

    async def hang_up_while_listening() -> set[asyncio.Task[object]]:
        task = asyncio.create_task(listen(WavFileSource(path, realtime=True), vad, CFG))
        await asyncio.sleep(0.3)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    assert asyncio.run(hang_up_while_listening()) == set()


def test_listen_raises_when_the_source_fails(vad: SileroVad, tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ValueError, match="cannot read"):
        asyncio.run(asyncio.wait_for(listen(WavFileSource(path), vad, CFG), timeout=10))
