"""The phone's own voice: real Piper renders each phrase once; afterwards it comes from the disk cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config import OfflineVoiceConfig
from common.speech import open_local_voice
from pi_client.audio.offline_voice import OfflineVoice
from pi_client.call.machine import Phrase

GREETING = "Hello? Go ahead, I'm listening."


class CountingFactory:
    """The real voice factory, counting how often the voice had to be loaded."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, piper_voice: str | None) -> Any:
        self.calls += 1
        return open_local_voice(piper_voice)


def test_phrases_are_rendered_once_then_played_from_the_cache(tmp_path: Path) -> None:
    cfg = OfflineVoiceConfig()
    first_factory = CountingFactory()
    first = OfflineVoice(cfg, GREETING, tmp_path, voice_factory=first_factory)
    first.prepare()
    assert first_factory.calls == 1  # one voice load for all the phrases
    spoken = {p: first.phrase(p) for p in Phrase}
    for phrase, audio in spoken.items():
        assert audio.sample_rate == 22050  # the packaged Piper voice
        # Speech of a plausible length for the sentence: roughly 8-25 characters per second.
        assert len(audio.text) / 25 < audio.seconds < len(audio.text) / 8, phrase
    assert len(list(tmp_path.glob("phrase-*.wav"))) == len(Phrase)

    again_factory = CountingFactory()
    again = OfflineVoice(cfg, GREETING, tmp_path, voice_factory=again_factory)
    again.prepare()
    assert again_factory.calls == 0  # lifting the handset after a restart needs no voice model
    for phrase in Phrase:
        assert abs(again.phrase(phrase).seconds - spoken[phrase].seconds) < 0.001


def test_a_new_greeting_or_voice_is_rendered_anew(tmp_path: Path) -> None:
    cfg = OfflineVoiceConfig()
    OfflineVoice(cfg, GREETING, tmp_path).prepare()
    factory = CountingFactory()
    changed = OfflineVoice(cfg, "Operator here, who would you like to talk to?", tmp_path, voice_factory=factory)
    assert changed.cache_path(changed.phrase(Phrase.GREETING).text) != changed.cache_path(GREETING)
    assert factory.calls == 1
    other_voice = OfflineVoice(OfflineVoiceConfig(piper_voice=str(tmp_path / "other.onnx")), GREETING, tmp_path)
    assert other_voice.cache_path(GREETING) != changed.cache_path(GREETING)


def test_a_damaged_cache_file_is_rendered_again(tmp_path: Path) -> None:
    cfg = OfflineVoiceConfig()
    voice = OfflineVoice(cfg, GREETING, tmp_path)
    path = voice.cache_path(GREETING)
    path.write_bytes(b"RIFF not really")
    audio = voice.phrase(Phrase.GREETING)
    assert audio.seconds > 1.0
    assert path.stat().st_size == 44 + len(audio.pcm)
