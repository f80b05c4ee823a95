"""Real faster-whisper with the packaged tiny.en on Piper speech: the transcript has the spoken words."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from common.config import PiSTTConfig, VADConfig
from common.wav import write_wav
from pi_client.audio.capture import WavFileSource
from pi_client.turns.endpoint import listen
from pi_client.turns.stt import TranscriberError, WhisperTranscriber
from pi_client.turns.vad import SileroVad
from tests.alsa_rig import REPO_ROOT
from tests.fixtures_pi import PI_RATE, SPEECH_TEXT, SPEECH_WORDS, mix, silence, white_noise
from tests.helpers import word_set, words


@pytest.fixture(scope="module")
def transcriber() -> WhisperTranscriber:
    return WhisperTranscriber(PiSTTConfig(threads=2))  # model None: the packaged tiny.en


def test_transcript_contains_the_spoken_words(
    transcriber: WhisperTranscriber, piper_speech: Callable[[str], bytes]
) -> None:
    text = transcriber.transcribe(silence(0.3) + piper_speech(SPEECH_TEXT) + silence(0.5))
    heard = words(text)
    assert all(w in heard for w in SPEECH_WORDS), text


def test_a_question_in_noise(transcriber: WhisperTranscriber, piper_speech: Callable[[str], bytes]) -> None:
    question = "What time does the train to Boston leave tomorrow morning?"
    speech = silence(0.3) + piper_speech(question) + silence(0.5)
    text = transcriber.transcribe(mix(speech, white_noise(len(speech) / 2 / PI_RATE, 0.01, seed=3)))
    assert {"time", "train", "boston", "tomorrow", "morning"} <= word_set(text), text


def test_file_mode_path_listen_then_transcribe(
    transcriber: WhisperTranscriber, piper_speech: Callable[[str], bytes], tmp_path: Path
) -> None:
    """Q.wav → the same listening path as the microphone → the words."""
    path = tmp_path / "q.wav"
    write_wav(str(path), silence(1.0) + piper_speech(SPEECH_TEXT) + silence(1.5), PI_RATE)
    utterance = asyncio.run(asyncio.wait_for(listen(WavFileSource(path), SileroVad(), VADConfig()), timeout=60))
    assert utterance is not None
    heard = words(transcriber.transcribe(utterance.pcm))
    assert all(w in heard for w in SPEECH_WORDS), heard


def test_empty_audio_is_empty_text(transcriber: WhisperTranscriber) -> None:
    assert transcriber.transcribe(b"") == ""


def test_a_bad_model_path_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TranscriberError, match=r"pi\.stt\.model: no model directory"):
        WhisperTranscriber(PiSTTConfig(model=str(tmp_path / "no-such-model")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TranscriberError, match=r"pi\.stt\.model: cannot load"):
        WhisperTranscriber(PiSTTConfig(model=str(tmp_path / "empty")))


def test_the_listening_stack_never_imports_torch(piper_speech: Callable[[str], bytes], tmp_path: Path) -> None:
    """On a Pi 4 importing torch is a SIGILL: hook, capture, VAD, endpointing and STT must run without it."""
    path = tmp_path / "q.wav"
    write_wav(str(path), silence(0.5) + piper_speech(SPEECH_TEXT) + silence(1.0), PI_RATE)
    code = """
import asyncio, sys
import pi_client.audio.capture, pi_client.turns.endpoint, pi_client.telephone.hook
import pi_client.turns.stt, pi_client.turns.vad
heavy = {"onnxruntime", "ctranslate2", "faster_whisper", "sounddevice", "gpiozero", "torch"}
assert not heavy & set(sys.modules), heavy & set(sys.modules)  # nothing heavy at import time
from common.config import PiSTTConfig, VADConfig
utt = asyncio.run(pi_client.turns.endpoint.listen(
    pi_client.audio.capture.WavFileSource(sys.argv[1]), pi_client.turns.vad.SileroVad(), VADConfig()))
print(pi_client.turns.stt.WhisperTranscriber(PiSTTConfig(threads=1)).transcribe(utt.pcm))
assert "torch" not in sys.modules
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fox" in words(proc.stdout)
