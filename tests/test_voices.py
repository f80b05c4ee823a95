"""The voice library stores validated clips under safe names; character voice choices survive a restart."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cloud_server.audio_codec import AudioTooLong, BadAudio, UnsupportedAudio
from cloud_server.library.voices import BadVoiceId, UnknownVoice, VoiceLibrary, VoiceOverrides, check_voice_id
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
    assert list(library.root.iterdir()) == []


@pytest.mark.parametrize("name", ["a", "narrator", "old-man_2", "0", "x" * 64])
def test_plain_ids_are_accepted(name: str) -> None:
    assert check_voice_id(name) == name


def test_add_list_replace_delete(library: VoiceLibrary, spoken_text: Speech) -> None:
    speech, rate = spoken_text("This is my voice. I would like the telephone to sound like me, please.")
    info, changed = library.add("me", encoded(speech, rate, "MP3", "MPEG_LAYER_III"))
    assert changed and info.sample_rate == rate and info.seconds == pytest.approx(speech.size / rate, abs=0.1)
    stored, stored_rate = sf.read(library.path("me"), dtype="float32")
    assert stored_rate == rate and stored.ndim == 1  # stored as plain mono WAV whatever was uploaded
    assert [v.voice_id for v in library.list()] == ["me"]
    assert library.list()[0].sha256 == info.sha256
    assert "me" in library

    again, changed = library.add("me", encoded(speech, rate, "MP3", "MPEG_LAYER_III"))
    assert not changed and again.sha256 == info.sha256
    other, changed = library.add("me", encoded(clip(3), 24000))
    assert changed and other.sha256 != info.sha256

    library.delete("me")
    assert library.list() == [] and "me" not in library
    with pytest.raises(UnknownVoice) as err:
        library.delete("me")
    assert err.value.status == 404
    with pytest.raises(UnknownVoice):
        library.path("me")


def test_stereo_flac_upload_becomes_mono_wav(library: VoiceLibrary) -> None:
    stereo = np.stack([clip(3, 44100), clip(3, 44100)], axis=1)
    info, _ = library.add("duet", encoded(stereo, 44100, "FLAC", "PCM_24"))
    meta = sf.info(library.path("duet"))
    assert (meta.format, meta.channels, meta.samplerate) == ("WAV", 1, 44100)
    assert info.seconds == pytest.approx(3.0, abs=0.01)


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
    info, _ = turbo.add("longer", encoded(clip(5.5), 24000))
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
