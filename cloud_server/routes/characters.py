"""Editing the people one can call: POST /characters, PUT and DELETE /characters/<id>.

Ids are as strict as voice ids; every field is bounded; the change is stored atomically in the
data directory before it answers (cloud_server/library/character_store.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, Final

from flask import Blueprint, Response, jsonify

from cloud_server.errors import ApiError
from cloud_server.library.voices import BadVoiceId, check_voice_id
from cloud_server.routes.knobs import NUMBER_LIMITS, number_fields
from cloud_server.routes.request import json_body, require_key, text_field
from cloud_server.routes.voices import ignored_knobs, prepare_or_warn
from cloud_server.services import services
from common.config import CharacterConfig

_LOGGER = logging.getLogger(__name__)
bp = Blueprint("characters_api", __name__)

TEXT_LIMITS: Final = {"display_name": 64, "persona": 4000, "greeting": 500, "apology": 500, "filler": 200}
"""The longest each text field may be, in characters."""
_ACCEPTED: Final = frozenset({*TEXT_LIMITS, *NUMBER_LIMITS, "id", "voice"})


@bp.post("/characters")
def create_character() -> tuple[Response, int]:
    """A new character: ``id`` plus any fields (the rest take the defaults); 201, 409 when the id is taken."""
    require_key()
    body = json_body(services().config.server.limits.max_body_bytes)
    try:
        cid = check_voice_id(body.get("id"))
    except BadVoiceId:
        raise ApiError(400, "bad_character_id", "'id' is 1-64 characters: a-z, 0-9, '-' or '_'.") from None
    base = dataclasses.replace(CharacterConfig(), display_name=cid.replace("-", " ").replace("_", " ").title())
    return _store(cid, base, body, create=True), 201


@bp.put("/characters/<character_id>")
def update_character(character_id: str) -> Response:
    """Change the given fields of a character; the others stay."""
    require_key()
    svc = services()
    body = json_body(svc.config.server.limits.max_body_bytes)
    cid, current = svc.characters.get(character_id)
    if "id" in body and body["id"] != cid:
        raise ApiError(400, "bad_field", "'id' cannot change; create a new character instead.")
    return _store(cid, current, body, create=False)


@bp.delete("/characters/<character_id>")
def delete_character(character_id: str) -> tuple[str, int]:
    """Remove a character (409 for the default one)."""
    require_key()
    svc = services()
    svc.characters.remove(character_id)
    svc.emotions.remove_character(character_id)
    return "", 204


def _store(cid: str, base: CharacterConfig, body: Mapping[str, Any], *, create: bool) -> Response:
    svc = services()
    unknown = sorted(set(body) - _ACCEPTED)
    if unknown:
        accepted = ", ".join(sorted(_ACCEPTED))
        raise ApiError(400, "unknown_field", f"Unknown field(s): {', '.join(unknown)}. Accepted: {accepted}.")
    character = dataclasses.replace(base, **character_fields(body))
    voice = body.get("voice", ...)
    if voice is not ... and voice is not None:
        svc.library.path(check_voice_id(voice))  # 404 before anything is stored
    svc.characters.put(cid, character, create=create)
    if voice is not ...:
        svc.characters.set_voice(cid, voice)
    prepare_or_warn(svc.characters.voice_spec(cid))
    return jsonify(next(c for c in svc.characters.listing(ignored_knobs()) if c["id"] == cid))


def character_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The bounded character fields present in ``body``; 400/413 naming the field otherwise."""
    fields: dict[str, Any] = {}
    for name, max_chars in TEXT_LIMITS.items():
        if name in body:
            value = text_field(body, name, max_chars, required=True)
            fields[name] = value
    fields.update(number_fields(body))
    return fields
