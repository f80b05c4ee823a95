"""Characters speak with their configured voice until switched; the switch outlives a restart."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cloud_server.library.characters import CharacterBook, UnknownCharacter
from cloud_server.library.voices import BadVoiceId, UnknownVoice, VoiceInUse, VoiceLibrary, VoiceOverrides
from cloud_server.tts.engines import descriptor
from common.config import ServerConfig, config_from_dict


def server_config(tmp_path: Path, model: str = "standard") -> ServerConfig:
    return config_from_dict(
        {
            "server": {
                "data_dir": str(tmp_path),
                "default_character": "operator",
                "tts": {"chatterbox": {"model": model, "voice_clip": "/srv/voices/house.wav"}},
                "characters": {
                    "operator": {"display_name": "Operator"},
                    "pirate": {
                        "display_name": "Captain",
                        "persona": "You are a pirate.",
                        "voice_clip": "/srv/voices/pirate.wav",
                        "exaggeration": 1.2,
                        "cfg_weight": 0.3,
                        "temperature": 0.6,
                    },
                },
            }
        }
    ).server


def book_for(tmp_path: Path, model: str = "standard") -> CharacterBook:
    cfg = server_config(tmp_path, model)
    library = VoiceLibrary(tmp_path / "voices", cfg.voices, descriptor("chatterbox").clip_longer_than(cfg.tts))
    return CharacterBook(cfg, library, VoiceOverrides.in_data_dir(tmp_path))


def upload(book: CharacterBook, voice_id: str) -> None:
    t = np.arange(24000 * 6) / 24000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000, format="WAV")
    book.library.add(voice_id, buf.getvalue())


def test_configured_voices_and_knobs(tmp_path: Path) -> None:
    book = book_for(tmp_path)
    pirate = book.voice_spec("pirate")
    assert (pirate.voice_id, pirate.clip) == ("pirate", "/srv/voices/pirate.wav")
    assert (pirate.exaggeration, pirate.cfg_weight, pirate.temperature) == (1.2, 0.3, 0.6)
    operator = book.voice_spec("operator")
    assert operator.clip == "/srv/voices/house.wav"  # falls back to the server-wide clip
    assert book.get(None)[0] == "operator"
    with pytest.raises(UnknownCharacter) as err:
        book.get("ghost")
    assert err.value.status == 404 and "operator, pirate" in str(err.value)


def test_switch_voice_persists_across_restart(tmp_path: Path) -> None:
    book = book_for(tmp_path)
    upload(book, "gruff")
    spec = book.set_voice("pirate", "gruff")
    assert spec.clip == str(tmp_path / "voices" / "gruff.wav") and spec.exaggeration == 1.2

    restarted = book_for(tmp_path)
    assert restarted.voice_spec("pirate").clip == str(tmp_path / "voices" / "gruff.wav")
    assert restarted.voice_choice("pirate").source == "library"
    restarted.set_voice("pirate", None)
    assert book_for(tmp_path).voice_spec("pirate").clip == "/srv/voices/pirate.wav"


def test_switch_refuses_unknown_things(tmp_path: Path) -> None:
    book = book_for(tmp_path)
    with pytest.raises(UnknownVoice):
        book.set_voice("pirate", "never-uploaded")
    with pytest.raises(BadVoiceId):
        book.set_voice("pirate", "../../etc/passwd")
    with pytest.raises(UnknownCharacter):
        book.set_voice("ghost", None)
    assert book.overrides.all() == {}


def test_a_deleted_clip_falls_back_to_the_configured_one(tmp_path: Path) -> None:
    book = book_for(tmp_path)
    upload(book, "gruff")
    book.set_voice("pirate", "gruff")
    (tmp_path / "voices" / "gruff.wav").unlink()  # removed behind the server's back
    assert book.voice_spec("pirate").clip == "/srv/voices/pirate.wav"


def test_openai_voice_names(tmp_path: Path) -> None:
    book = book_for(tmp_path)
    upload(book, "narrator")
    assert book.resolve("pirate").exaggeration == 1.2
    narrator = book.resolve("narrator")
    assert narrator.voice_id == "narrator" and narrator.clip == str(tmp_path / "voices" / "narrator.wav")
    for name in ["alloy", "../narrator", "Narrator", ""]:
        with pytest.raises(UnknownVoice, match="narrator, operator, pirate"):
            book.resolve(name)


def test_listing_says_what_the_model_ignores(tmp_path: Path) -> None:
    standard_cfg, turbo_cfg = server_config(tmp_path).tts, server_config(tmp_path, "turbo").tts
    chatterbox, piper = descriptor("chatterbox"), descriptor("piper")
    standard = {c["id"]: c for c in book_for(tmp_path).listing(chatterbox.ignored_knobs(standard_cfg))}
    assert standard["pirate"]["ignored_parameters"] == [] and standard["operator"]["default"]
    assert standard["pirate"]["voice"] == {"source": "character", "library_voice": None}
    assert "voice_clip" not in standard["pirate"]  # no server paths in the listing
    turbo = book_for(tmp_path, "turbo").listing(chatterbox.ignored_knobs(turbo_cfg))
    assert turbo[1]["ignored_parameters"] == ["exaggeration", "cfg_weight"]
    assert list(piper.ignored_knobs(standard_cfg)) == ["voice_clip", "exaggeration", "cfg_weight", "temperature"]


def test_the_engine_descriptor_holds_the_turbo_facts(tmp_path: Path) -> None:
    standard_cfg, turbo_cfg = server_config(tmp_path).tts, server_config(tmp_path, "turbo").tts
    chatterbox = descriptor("chatterbox")
    assert (chatterbox.clip_longer_than(standard_cfg), chatterbox.clip_longer_than(turbo_cfg)) == (0.0, 5.0)
    assert chatterbox.cache_identity(standard_cfg) != chatterbox.cache_identity(turbo_cfg)
    assert book_for(tmp_path, "turbo").library.min_seconds == 5.0
    with pytest.raises(ValueError, match="known: chatterbox, piper, espeak"):
        descriptor("chatterbox-turbo")


class SlowOverrides(VoiceOverrides):
    """The overrides file, slow to write (a busy disk): the switch is caught between check and write."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing = threading.Event()
        self.go_on = threading.Event()

    def set(self, character_id: str, voice_id: str | None) -> None:
        if voice_id is not None:
            self.writing.set()
            self.go_on.wait(timeout=3.0)
        super().set(character_id, voice_id)


def test_a_voice_cannot_be_deleted_while_a_character_is_being_switched_to_it(tmp_path: Path) -> None:
    cfg = server_config(tmp_path, "standard")
    overrides = SlowOverrides(tmp_path / "character_voices.json")
    book = CharacterBook(cfg, VoiceLibrary(tmp_path / "voices", cfg.voices), overrides)
    upload(book, "v")
    switch = threading.Thread(target=book.set_voice, args=("operator", "v"))
    switch.start()
    assert overrides.writing.wait(timeout=10)  # the switch checked that "v" exists and is writing
    outcome: list[str] = []

    def delete() -> None:
        try:
            book.library.delete("v", users=lambda: overrides.users_of("v"))
            outcome.append("deleted")
        except VoiceInUse:
            outcome.append("in use")

    deleter = threading.Thread(target=delete)
    deleter.start()
    deleter.join(timeout=0.5)  # without the library lock the delete finishes here, mid-switch
    overrides.go_on.set()
    switch.join(timeout=10)
    deleter.join(timeout=10)
    assert outcome == ["in use"]
    assert book.voice_choice("operator").library_voice == "v" and "v" in book.library
