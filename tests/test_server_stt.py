"""Server-side Whisper turns real speech, uploaded in any accepted container, into the words said."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import numpy as np
import pytest
import soundfile as sf

from cloud_server.audio_codec import decode_audio
from cloud_server.stt import ServerTranscriber, TranscriberBusy, pick_compute_type, pick_device
from common.config import ServerSTTConfig
from common.wav import resample_float
from common.whisper import resolve_model
from tests.helpers import words

SENTENCE = "Please connect me to the lighthouse keeper on the northern island."


def test_device_and_compute_type_choice() -> None:
    assert pick_device("auto", 0) == "cpu"
    assert pick_device("auto", 2) == "cuda"
    assert pick_device("cpu", 2) == "cpu"
    assert pick_compute_type("default", "cpu") == "int8"
    assert pick_compute_type("default", "cuda") == "float16"
    assert pick_compute_type("int8_float16", "cuda") == "int8_float16"


def test_packaged_model_and_local_path() -> None:
    packaged = resolve_model(None)
    assert isinstance(packaged, str) and packaged.endswith("model")
    assert resolve_model(packaged) == packaged
    assert resolve_model("small.en") == "small.en"  # a hub name passes through for real servers


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("MP3", "MPEG_LAYER_III"), ("OGG", "OPUS")])
def test_piper_speech_round_trip(
    server_transcriber: ServerTranscriber,
    spoken_text: Callable[[str], tuple[np.ndarray, int]],
    fmt: str,
    subtype: str,
) -> None:
    samples, rate = spoken_text(SENTENCE)
    if fmt == "OGG":  # Opus takes 8/12/16/24/48 kHz, not Piper's 22.05 kHz
        samples, rate = resample_float(samples, rate, 48000), 48000
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    audio = decode_audio(buf.getvalue(), max_bytes=10**7, max_seconds=30)
    text = server_transcriber.transcribe(audio.samples)
    assert words(text) == words(SENTENCE)


@pytest.mark.parametrize("scale", [1e30, -1e20])
def test_float_audio_far_past_full_scale_is_still_heard(
    server_transcriber: ServerTranscriber, spoken_text: Callable[[str], tuple[np.ndarray, int]], scale: float
) -> None:
    # The review's upload: float samples of ±1e30 made Whisper decode "!!!!" at every fallback temperature.
    samples, rate = spoken_text(SENTENCE)
    loud = resample_float(samples, rate, 16000) * np.float32(scale)
    loud[:50] = np.nan
    assert words(server_transcriber.transcribe(loud)) == words(SENTENCE)
    buf = io.BytesIO()
    sf.write(buf, samples * np.float32(scale), rate, format="WAV", subtype="FLOAT")
    audio = decode_audio(buf.getvalue(), max_bytes=10**7, max_seconds=30)
    assert float(np.abs(audio.samples).max()) <= 1.0
    assert words(server_transcriber.transcribe(audio.samples)) == words(SENTENCE)


def test_a_caller_waits_for_whisper_only_so_long(server_transcriber: ServerTranscriber) -> None:
    # The lock held: another caller's transcription in progress.
    with server_transcriber._lock, pytest.raises(TranscriberBusy):
        server_transcriber.transcribe(np.zeros(16000, dtype=np.float32), wait_seconds=0.05)
    assert server_transcriber.transcribe(np.zeros(16000, dtype=np.float32), wait_seconds=0.05) == ""


def test_silence_gives_little_or_nothing(server_transcriber: ServerTranscriber) -> None:
    text = server_transcriber.transcribe(np.zeros(16000 * 2, dtype=np.float32))
    assert len(words(text)) <= 2


def test_concurrent_calls_are_serialized(
    server_transcriber: ServerTranscriber, spoken_text: Callable[[str], tuple[np.ndarray, int]]
) -> None:
    texts = ["The red kettle is boiling.", "Green bottles are standing on the wall."]
    audio = [resample_float(*spoken_text(t), 16000) for t in texts]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = server_transcriber.transcribe(audio[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [words(results[i]) for i in range(2)] == [words(t) for t in texts]


def test_model_loads_lazily_once() -> None:
    transcriber = ServerTranscriber(ServerSTTConfig(beam_size=1))
    assert not transcriber.loaded
    transcriber.transcribe(np.zeros(1600, dtype=np.float32))
    assert transcriber.loaded and transcriber.device == "cpu" and transcriber.compute_type == "int8"
