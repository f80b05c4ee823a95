"""Emotion profiles (seed 004): several ways each character can sound, kept in ``<data_dir>/emotions.json``.

A profile belongs to one character and has its own knobs (exaggeration, temperature, cfg weight)
and, optionally, its own reference clips: library voices (cloud_server/library/voices.py) that it
lists, the newest last and the one spoken with. Without clips it speaks with its character's voice.
Ids are as strict as voice ids. The file is rewritten atomically on every change, so a crash leaves
the old file or the new and a restart serves the same profiles.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cloud_server.library.characters import CharacterBook
from cloud_server.library.voices import UnknownVoice, VoiceError, check_voice_id
from cloud_server.tts.base import VoiceSpec
from common.atomic import atomic_write
from common.config import ConfigError

_LOGGER = logging.getLogger(__name__)
FILE_NAME: Final = "emotions.json"


class UnknownEmotion(VoiceError):
    """No emotion profile with that id (or name, for the character asked)."""

    status = 404
    code = "unknown_emotion"


class EmotionConflict(VoiceError):
    """The id, or the name for that character, is taken."""

    status = 409
    code = "emotion_conflict"


def now_iso() -> str:
    """The current UTC time as ISO 8601, to the second (the profiles' timestamps)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Emotion:
    """One emotion profile."""

    emotion_id: str
    character: str
    name: str
    description: str = ""
    exaggeration: float = 0.5
    temperature: float = 0.8
    cfg_weight: float = 0.5
    voices: tuple[str, ...] = ()
    """Its own reference clips (library voice ids), oldest first; the last one is spoken with."""
    created: str = ""
    updated: str = ""

    def as_json(self) -> dict[str, Any]:
        """The API's view of the profile."""
        return {
            "id": self.emotion_id,
            "character": self.character,
            "name": self.name,
            "description": self.description,
            "exaggeration": self.exaggeration,
            "temperature": self.temperature,
            "cfg_weight": self.cfg_weight,
            "voices": list(self.voices),
            "created": self.created,
            "updated": self.updated,
        }


class EmotionStore:
    """Reads and writes every profile as one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> EmotionStore:
        """The store under the server's data directory."""
        return cls(data_dir / FILE_NAME)

    def load(self) -> dict[str, Emotion]:
        """The stored profiles; an unreadable file stops the server at start (it holds someone's work)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise ConfigError(f"{self.path}: unreadable emotion profiles ({err}); fix or remove the file") from err
        try:
            return {str(e["id"]): _from_json(e) for e in raw["emotions"]}
        except (TypeError, KeyError, ValueError) as err:
            raise ConfigError(f"{self.path}: expected {{'emotions': [{{'id': ..., ...}}]}} ({err!r})") from err

    def save(self, emotions: Iterable[Emotion]) -> None:
        """Store every profile, atomically."""
        payload = {"emotions": [e.as_json() for e in emotions]}
        atomic_write(self.path, json.dumps(payload, indent=2))


def _from_json(entry: Mapping[str, Any]) -> Emotion:
    return Emotion(
        emotion_id=check_voice_id(entry["id"]),
        character=str(entry["character"]),
        name=str(entry["name"]),
        description=str(entry.get("description", "")),
        exaggeration=float(entry["exaggeration"]),
        temperature=float(entry["temperature"]),
        cfg_weight=float(entry["cfg_weight"]),
        voices=tuple(check_voice_id(v) for v in entry.get("voices", [])),
        created=str(entry.get("created", "")),
        updated=str(entry.get("updated", "")),
    )


class EmotionBook:
    """Every character's emotion profiles; changes happen under the voice library's lock.

    That one lock orders them against voice uploads and deletions, so a profile never points at a
    clip that a concurrent ``DELETE /voices`` removed.
    """

    def __init__(self, store: EmotionStore, characters: CharacterBook) -> None:
        self._store = store
        self._characters = characters
        self._library = characters.library
        # Replaced whole on each change (never mutated), so readers in other threads need no lock.
        self._emotions: Mapping[str, Emotion] = store.load()

    def get(self, emotion_id: str) -> Emotion:
        """The profile with that id; UnknownEmotion otherwise."""
        found = self._emotions.get(emotion_id)
        if found is None:
            raise UnknownEmotion(f"No emotion profile with id {emotion_id!r}.")
        return found

    def profiles(self, character: str | None = None) -> list[Emotion]:
        """Every profile (of one character when given), by character then name."""
        found = [e for e in self._emotions.values() if character is None or e.character == character]
        return sorted(found, key=lambda e: (e.character, e.name.lower(), e.emotion_id))

    def find(self, character_id: str, wanted: str) -> Emotion:
        """A character's profile by id or by name (any case); UnknownEmotion naming the ones it has."""
        own = self.profiles(character_id)
        for emotion in own:
            if wanted == emotion.emotion_id or wanted.casefold() == emotion.name.casefold():
                return emotion
        known = ", ".join(f"{e.emotion_id} ({e.name})" for e in own) or "none yet"
        raise UnknownEmotion(f"Character {character_id!r} has no emotion {wanted!r}. Its emotions: {known}.")

    def put(self, emotion: Emotion, *, create: bool) -> Emotion:
        """Create (409 when the id is taken) or replace a profile; timestamps set here; persisted at once."""
        with self._library.lock:
            self._characters.get(emotion.character)  # UnknownCharacter
            for voice_id in emotion.voices:
                self._library.path(voice_id)  # UnknownVoice
            current = self._emotions.get(emotion.emotion_id)
            if create and current is not None:
                raise EmotionConflict(f"An emotion profile with id {emotion.emotion_id!r} exists already.")
            if not create and current is None:
                raise UnknownEmotion(f"No emotion profile with id {emotion.emotion_id!r}.")
            for other in self.profiles(emotion.character):
                if other.emotion_id != emotion.emotion_id and other.name.casefold() == emotion.name.casefold():
                    raise EmotionConflict(f"{emotion.character!r} already has an emotion named {other.name!r}.")
            stamp = now_iso()
            stored = dataclasses.replace(emotion, created=current.created if current else stamp, updated=stamp)
            self._commit({**self._emotions, stored.emotion_id: stored})
        _LOGGER.info("Emotion %s of %s %s", stored.emotion_id, stored.character, "created" if create else "changed")
        return stored

    def add_voice(self, emotion_id: str, voice_id: str) -> Emotion:
        """Make a library voice the profile's newest clip (the one it speaks with)."""
        with self._library.lock:
            emotion = self.get(emotion_id)
            voices = (*(v for v in emotion.voices if v != voice_id), voice_id)
            return self.put(dataclasses.replace(emotion, voices=voices), create=False)

    def remove(self, emotion_id: str) -> None:
        """Delete a profile (its clips stay in the voice library)."""
        with self._library.lock:
            self.get(emotion_id)
            self._commit({k: v for k, v in self._emotions.items() if k != emotion_id})
        _LOGGER.info("Emotion %s removed", emotion_id)

    def remove_character(self, character_id: str) -> None:
        """Delete the profiles of a character that was deleted."""
        with self._library.lock:
            kept = {k: v for k, v in self._emotions.items() if v.character != character_id}
            if len(kept) != len(self._emotions):
                self._commit(kept)

    def users_of(self, voice_id: str) -> list[str]:
        """Profiles speaking with, or keeping, this library voice (for the voice library's "in use" check)."""
        return [f"emotion {e.emotion_id}" for e in self.profiles() if voice_id in e.voices]

    def voice_spec(self, emotion: Emotion) -> VoiceSpec:
        """The character's voice spoken with the profile's knobs and, when it has one, its own newest clip."""
        base = self._characters.voice_spec(emotion.character)
        clip = base.clip
        if emotion.voices:
            try:
                clip = str(self._library.path(emotion.voices[-1]))
            except UnknownVoice:
                _LOGGER.warning("Emotion %s points at missing voice %s", emotion.emotion_id, emotion.voices[-1])
        return VoiceSpec(
            voice_id=f"{emotion.character}.{emotion.emotion_id}",
            clip=clip,
            exaggeration=emotion.exaggeration,
            cfg_weight=emotion.cfg_weight,
            temperature=emotion.temperature,
        )

    def _commit(self, emotions: dict[str, Emotion]) -> None:
        self._store.save(sorted(emotions.values(), key=lambda e: e.emotion_id))  # on disk first
        self._emotions = emotions
