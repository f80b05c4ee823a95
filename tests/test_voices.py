"""The voice library stores validated clips under safe names; character voice choices survive a restart."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cloud_server.audio_codec import AudioTooLong, BadAudio, BadSampleRate, UnsupportedAudio
from cloud_server.library.voices import (
    STORAGE_RATE,
    BadVoiceId,
    LibraryFull,
    UnknownVoice,
    UnusableVoice,
    VoiceInUse,
    VoiceLibrary,
    VoiceOverrides,
    check_voice_id,
)
from common.config import VoiceLibraryConfig

Speech = Callable[[str], tuple[np.ndarray, int]]
NASTY = [
    "",
    ".",
    "..",
    "../secret",
    "..%2fsecret",
    "a/b",
    "a\\b",
    "/etc/passwd",
    "voice.wav",
    "Voice",
    "-leading-dash",
    "_leading",
    "name\n",
    "name\x00",
    "with space",
    "ümlaut",
    "٣",  # an Arabic-Indic digit: \d would take it, the pattern must not
    "x" * 65,
    None,
    42,
]


def clip(seconds: float, rate: int = 24000, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def encoded(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture
def library(tmp_path: Path) -> VoiceLibrary:
    return VoiceLibrary(tmp_path / "voices", VoiceLibraryConfig(max_upload_bytes=2_000_000, max_seconds=20))


@pytest.mark.parametrize("name", NASTY)
def test_nasty_ids_are_refused_everywhere(library: VoiceLibrary, tmp_path: Path, name: object) -> None:
    (tmp_path / "secret.wav").write_bytes(b"keep me")
    with pytest.raises(BadVoiceId):
        check_voice_id(name)
    with pytest.raises(BadVoiceId):
        library.add(name, encoded(clip(3), 24000))  # type: ignore[arg-type]
    with pytest.raises(BadVoiceId):
        library.path(name)  # type: ignore[arg-type]
    with pytest.raises(BadVoiceId):
        library.delete(name)  # type: ignore[arg-type]
    assert name not in library
    assert (tmp_path / "secret.wav").read_bytes() == b"keep me"
    assert [p.name for p in library.root.iterdir() if p.name != "index.json"] == []


@pytest.mark.parametrize("name", ["a", "narrator", "old-man_2", "0", "x" * 64])
def test_plain_ids_are_accepted(name: str) -> None:
    assert check_voice_id(name) == name


def test_add_list_replace_delete(library: VoiceLibrary, spoken_text: Speech) -> None:
    speech, rate = spoken_text("This is my voice. I would like the telephone to sound like me, please.")
    info, changed, _ = astuple(library.add("me", encoded(speech, rate, "MP3", "MPEG_LAYER_III")))
    assert changed and info.sample_rate == STORAGE_RATE and info.seconds == pytest.approx(speech.size / rate, abs=0.1)
    stored, stored_rate = sf.read(library.path("me"), dtype="float32")
    assert stored_rate == STORAGE_RATE and stored.ndim == 1  # plain mono WAV at one rate whatever was uploaded
    assert [v.voice_id for v in library.list()] == ["me"]
    assert library.list()[0].sha256 == info.sha256
    assert "me" in library

    again, changed, _ = astuple(library.add("me", encoded(speech, rate, "MP3", "MPEG_LAYER_III")))
    assert not changed and again.sha256 == info.sha256
    other, changed, _ = astuple(library.add("me", encoded(clip(3), 24000)))
    assert changed and other.sha256 != info.sha256

    library.delete("me")
    assert library.list() == [] and "me" not in library
    with pytest.raises(UnknownVoice) as err:
        library.delete("me")
    assert err.value.status == 404
    with pytest.raises(UnknownVoice):
        library.path("me")


def astuple(stored: object) -> tuple[object, bool, bool]:
    return stored.info, stored.changed, stored.created  # type: ignore[attr-defined]


def test_stereo_flac_upload_becomes_mono_wav(library: VoiceLibrary) -> None:
    stereo = np.stack([clip(3, 44100), clip(3, 44100)], axis=1)
    info = library.add("duet", encoded(stereo, 44100, "FLAC", "PCM_24")).info
    meta = sf.info(library.path("duet"))
    assert (meta.format, meta.channels, meta.samplerate) == ("WAV", 1, STORAGE_RATE)
    assert info.seconds == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize("rate", [8000, 16000, 48000, 192000])
def test_every_clip_is_stored_at_one_rate_whatever_its_upload_rate(library: VoiceLibrary, rate: int) -> None:
    # The review stored a 655 kHz FLAC as a 77 MB WAV; now a clip costs its length at 24 kHz.
    library.add("v", encoded(clip(10, rate), rate, "FLAC", "PCM_24"))
    meta = sf.info(library.path("v"))
    assert meta.samplerate == STORAGE_RATE and meta.frames == pytest.approx(10 * STORAGE_RATE, abs=2)
    assert library.path("v").stat().st_size < 10 * STORAGE_RATE * 2 + 100
    with pytest.raises(BadSampleRate):
        library.add("w", encoded(clip(3, 655350), 655350, "FLAC", "PCM_16"))
    assert [v.voice_id for v in library.list()] == ["v"]


def test_count_and_bytes_are_capped(tmp_path: Path) -> None:
    small = VoiceLibrary(tmp_path / "a", VoiceLibraryConfig(max_voices=2))
    small.add("one", encoded(clip(3), 24000))
    small.add("two", encoded(clip(3), 24000))
    with pytest.raises(LibraryFull) as err:
        small.add("three", encoded(clip(3), 24000))
    assert (err.value.status, err.value.code) == (409, "library_full")
    assert small.add("two", encoded(clip(4), 24000)).changed  # replacing one needs no new room
    assert [v.voice_id for v in small.list()] == ["one", "two"]

    budget = VoiceLibrary(tmp_path / "b", VoiceLibraryConfig(max_total_bytes=400_000))  # 8 s at 24 kHz
    budget.add("five", encoded(clip(5), 24000))
    with pytest.raises(LibraryFull, match="budget"):
        budget.add("four", encoded(clip(4), 24000))
    budget.add("five", encoded(clip(8), 24000))  # its own old size does not count against it
    assert [v.voice_id for v in budget.list()] == ["five"]
    assert not (tmp_path / "b" / "four.wav").exists()


def test_listing_reads_hashes_from_the_index(tmp_path: Path) -> None:
    root = tmp_path / "voices"
    library = VoiceLibrary(root, VoiceLibraryConfig())
    first = library.add("me", encoded(clip(3), 24000)).info
    # Same size and mtime, other bytes: a listing that re-hashed every clip would notice.
    path = library.path("me")
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-2:] = b"\x01\x02"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert library.list()[0].sha256 == first.sha256
    assert VoiceLibrary(root, VoiceLibraryConfig()).list()[0].sha256 == first.sha256  # kept across a restart
    # A clip that really changed on disk (new mtime) is read again, once.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = library.list()[0].sha256
    assert changed == hashlib.sha256(bytes(data)).hexdigest() != first.sha256
    (root / "index.json").write_text("{not json", encoding="utf-8")
    assert VoiceLibrary(root, VoiceLibraryConfig()).list()[0].sha256 == changed  # a broken index is rebuilt
    assert json.loads((root / "index.json").read_text(encoding="utf-8"))["me"]["sha256"] == changed
    path.unlink()
    assert library.list() == [] and json.loads((root / "index.json").read_text(encoding="utf-8")) == {}


def test_a_clip_the_voice_model_refuses_leaves_the_library_as_it_was(library: VoiceLibrary) -> None:
    def refuse() -> None:
        raise RuntimeError("no conditionals for this clip")

    with pytest.raises(UnusableVoice) as err:
        library.add("new", encoded(clip(3), 24000), verify=refuse)
    assert err.value.code == "unusable_voice" and "new" not in library
    kept = library.add("old", encoded(clip(3), 24000)).info
    with pytest.raises(UnusableVoice):
        library.add("old", encoded(clip(4), 24000), verify=refuse)
    assert library.info("old").sha256 == kept.sha256 == hashlib.sha256(library.path("old").read_bytes()).hexdigest()
    assert sorted(p.name for p in library.root.iterdir()) == ["index.json", "old.wav"]  # no temp files left


def test_a_voice_in_use_is_not_deleted(library: VoiceLibrary) -> None:
    library.add("busy", encoded(clip(3), 24000))
    with pytest.raises(VoiceInUse, match="operator"):
        library.delete("busy", users=lambda: ["operator"])
    assert "busy" in library
    library.delete("busy", users=lambda: [])
    assert "busy" not in library


def test_bad_uploads_are_refused_and_nothing_is_stored(library: VoiceLibrary) -> None:
    with pytest.raises(BadAudio, match="more than 2 s"):
        library.add("short", encoded(clip(1.0), 24000))
    with pytest.raises(BadAudio, match="silent"):
        library.add("quiet", encoded(np.zeros(24000 * 3, np.float32), 24000))
    with pytest.raises(UnsupportedAudio):
        library.add("junk", b"GIF89a" + b"\x00" * 5000)
    with pytest.raises(BadAudio):
        library.add("cut", encoded(clip(3), 24000, "FLAC")[:300])
    with pytest.raises(AudioTooLong):
        library.add("long", encoded(clip(25, 8000), 8000))
    with pytest.raises(AudioTooLong):
        library.add("big", b"RIFF" + b"\x00" * 2_000_001)
    assert library.list() == []


def test_turbo_needs_more_than_five_seconds(tmp_path: Path) -> None:
    turbo = VoiceLibrary(tmp_path, VoiceLibraryConfig(), clip_longer_than=5.0)  # Turbo's descriptor says so
    assert turbo.min_seconds == 5.0
    with pytest.raises(BadAudio, match="more than 5 s"):
        turbo.add("five", encoded(clip(5.0), 24000))
    info = turbo.add("longer", encoded(clip(5.5), 24000)).info
    assert info.seconds == pytest.approx(5.5)


def test_overrides_persist_across_restart(tmp_path: Path) -> None:
    overrides = VoiceOverrides.in_data_dir(tmp_path)
    assert overrides.get("operator") is None
    overrides.set("operator", "me")
    overrides.set("pirate", "gruff")
    reloaded = VoiceOverrides.in_data_dir(tmp_path)
    assert reloaded.get("operator") == "me" and reloaded.all() == {"operator": "me", "pirate": "gruff"}
    assert reloaded.users_of("me") == ["operator"]
    reloaded.set("operator", None)
    assert VoiceOverrides.in_data_dir(tmp_path).all() == {"pirate": "gruff"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["character_voices.json"]  # no temp files left
    with pytest.raises(BadVoiceId):
        reloaded.set("operator", "../x")


def test_corrupt_overrides_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "character_voices.json").write_text('{"operator": "me", "bad": "../../x", "n": 3', encoding="utf-8")
    assert VoiceOverrides.in_data_dir(tmp_path).all() == {}
    (tmp_path / "character_voices.json").write_text('{"operator": "me", "bad": "../../x"}', encoding="utf-8")
    assert VoiceOverrides.in_data_dir(tmp_path).all() == {"operator": "me"}
