"""The people one can call: characters from the config, with runtime voice choices from the library.

Characters can be created, changed and removed at runtime (``/characters``); the changes are kept
by a ``CharacterStore`` over config.yaml's, which stay the defaults.

A character's voice is, in order: the library voice it was switched to at runtime
(``POST /characters/<id>/voice``), its configured ``voice_clip``, then the server-wide default
clip. The listing says which of the knobs the speaking engine ignores (its descriptor knows) instead
of pretending.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloud_server.library.character_store import CharacterStore
from cloud_server.library.voices import UnknownVoice, VoiceError, VoiceLibrary, VoiceOverrides, check_voice_id
from cloud_server.tts.base import VoiceSpec
from common.config import CharacterConfig, ServerConfig

_LOGGER = logging.getLogger(__name__)


class UnknownCharacter(VoiceError):
    """No character with that id."""

    status = 404
    code = "unknown_character"


class CharacterConflict(VoiceError):
    """The id is taken, or the character cannot be removed."""

    status = 409
    code = "character_conflict"


@dataclass(frozen=True)
class VoiceChoice:
    """Where a character's voice comes from now."""

    clip: str | None
    source: str
    """``library`` (switched at runtime), ``character`` (its config), ``default`` or ``builtin``."""
    library_voice: str | None = None


class CharacterBook:
    """Characters from config merged with the persisted runtime voice overrides."""

    def __init__(
        self,
        server: ServerConfig,
        library: VoiceLibrary,
        overrides: VoiceOverrides,
        store: CharacterStore | None = None,
    ) -> None:
        self._defaults: Mapping[str, CharacterConfig] = server.characters
        self._store = store
        # Replaced whole on each change (never mutated), so readers in other threads need no lock.
        self._characters: Mapping[str, CharacterConfig] = store.load(server.characters) if store else server.characters
        self._default_id = server.default_character
        self._default_clip = server.tts.chatterbox.voice_clip
        self.library = library
        self.overrides = overrides

    def get(self, character_id: str | None) -> tuple[str, CharacterConfig]:
        """The named character, or the default one for None; UnknownCharacter otherwise."""
        cid = character_id or self._default_id
        found = self._characters.get(cid)
        if found is None:
            known = ", ".join(sorted(self._characters))
            raise UnknownCharacter(f"No character named {cid!r}. Known: {known}.")
        return cid, found

    def __contains__(self, character_id: object) -> bool:
        return character_id in self._characters

    def ids(self) -> list[str]:
        """Every character id, in order."""
        return list(self._characters)

    def put(self, character_id: str, character: CharacterConfig, *, create: bool) -> None:
        """Create (``create``: 409 when the id is taken) or replace a character; persisted at once."""
        with self.library.lock:  # one change at a time, also against voice uploads taking the name
            exists = character_id in self._characters
            if create and exists:
                raise CharacterConflict(f"A character called {character_id!r} exists already.")
            if not create and not exists:
                self.get(character_id)  # UnknownCharacter
            if create and character_id in self.library:
                raise CharacterConflict(f"A library voice is called {character_id!r}; pick another name.")
            self._commit({**self._characters, character_id: character})
        _LOGGER.info("Character %s %s", character_id, "created" if create else "changed")

    def remove(self, character_id: str) -> None:
        """Delete a character (409 for the default one); its voice switch goes with it."""
        cid, _ = self.get(character_id)
        if cid == self._default_id:
            raise CharacterConflict(f"{cid!r} is the default character (server.default_character); it stays.")
        with self.library.lock:
            self._commit({k: v for k, v in self._characters.items() if k != cid})
            self.overrides.set(cid, None)
        _LOGGER.info("Character %s removed", cid)

    def _commit(self, characters: dict[str, CharacterConfig]) -> None:
        if self._store is not None:
            self._store.save(characters, self._defaults)  # on disk first: a failed write changes nothing
        self._characters = characters

    def voice_choice(self, character_id: str) -> VoiceChoice:
        """The clip a character speaks with now, and why."""
        cid, character = self.get(character_id)
        voice_id = self.overrides.get(cid)
        if voice_id is not None:
            try:
                return VoiceChoice(str(self.library.path(voice_id)), "library", voice_id)
            except UnknownVoice:
                _LOGGER.warning("Character %s points at missing voice %s: using its configured clip", cid, voice_id)
        if character.voice_clip:
            return VoiceChoice(character.voice_clip, "character")
        if self._default_clip:
            return VoiceChoice(self._default_clip, "default")
        return VoiceChoice(None, "builtin")

    def voice_spec(self, character_id: str) -> VoiceSpec:
        """What the TTS engine needs to speak as this character."""
        cid, character = self.get(character_id)
        return VoiceSpec(
            voice_id=cid,
            clip=self.voice_choice(cid).clip,
            exaggeration=character.exaggeration,
            cfg_weight=character.cfg_weight,
            temperature=character.temperature,
        )

    def library_voice_spec(self, voice_id: str) -> VoiceSpec:
        """A library voice spoken with the default knobs (for the OpenAI route)."""
        defaults = CharacterConfig()
        return VoiceSpec(
            voice_id=voice_id,
            clip=str(self.library.path(voice_id)),
            exaggeration=defaults.exaggeration,
            cfg_weight=defaults.cfg_weight,
            temperature=defaults.temperature,
        )

    def resolve(self, name: str) -> VoiceSpec:
        """An OpenAI ``voice``: a character id first, then a library voice; UnknownVoice otherwise."""
        if name in self._characters:
            return self.voice_spec(name)
        try:
            return self.library_voice_spec(name)
        except VoiceError:
            known = sorted([*self._characters, *(v.voice_id for v in self.library.list())])
            raise UnknownVoice(f"No voice or character named {name!r}. Known: {', '.join(known)}.") from None

    def set_voice(self, character_id: str, voice_id: str | None) -> VoiceSpec:
        """Switch a character to a library voice (None: back to its configured clip), persisted."""
        cid, _ = self.get(character_id)
        with self.library.lock:  # a concurrent DELETE /voices cannot remove the voice between check and switch
            if voice_id is not None:
                self.library.path(check_voice_id(voice_id))  # UnknownVoice when not uploaded
            self.overrides.set(cid, voice_id)
        _LOGGER.info("Character %s now speaks with %s", cid, voice_id or "its configured voice")
        return self.voice_spec(cid)

    def listing(self, ignored: Sequence[str]) -> list[dict[str, Any]]:
        """``GET /characters``: each character, its voice and the knobs the speaking engine ignores (``ignored``)."""
        out = []
        for cid, character in self._characters.items():
            choice = self.voice_choice(cid)
            out.append(
                {
                    "id": cid,
                    "display_name": character.display_name,
                    "default": cid == self._default_id,
                    "voice": {"source": choice.source, "library_voice": choice.library_voice},
                    "exaggeration": character.exaggeration,
                    "cfg_weight": character.cfg_weight,
                    "temperature": character.temperature,
                    "greeting": character.greeting,
                    "filler": character.filler,
                    "persona": character.persona,
                    "ignored_parameters": list(ignored),
                }
            )
        return out
