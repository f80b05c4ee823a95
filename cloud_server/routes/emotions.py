"""Emotion profiles over HTTP (seed 004): ``/emotions`` list and create, ``/emotions/<id>`` read, change,
delete, ``/emotions/<id>/test`` (hear it) and ``/emotions/<id>/voices`` (give it its own clip).

Fields are bounded like a character's; each change is stored atomically before the answer
(cloud_server/library/emotions.py) and the profile's voice is prepared at once, as a voice
upload's is, so the first call that uses it does not pay for it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

from flask import Blueprint, Response, jsonify, request

from cloud_server.errors import ApiError
from cloud_server.library.emotions import Emotion
from cloud_server.library.voices import BadVoiceId, check_voice_id
from cloud_server.pipeline.sentences import has_speech
from cloud_server.routes.knobs import NUMBER_LIMITS, number_fields
from cloud_server.routes.request import json_body, require_key, text_field
from cloud_server.routes.voices import audio_upload, prepare_or_warn
from cloud_server.services import services
from common.wav import wav_header

bp = Blueprint("emotions_api", __name__)
TEXT_LIMITS: Final = {"name": 64, "description": 500}
"""The longest each text field may be, in characters."""
_ACCEPTED: Final = frozenset({*TEXT_LIMITS, *NUMBER_LIMITS, "id", "character", "voices"})
MAX_PER_CHARACTER: Final = 50
"""Most profiles one character has."""
_MAX_VOICES: Final = 20
"""Most clips one profile lists."""


@bp.get("/emotions")
def list_emotions() -> Response:
    """Every profile, or one character's (``?character=``)."""
    require_key()
    svc = services()
    character = request.args.get("character") or None
    if character is not None:
        character, _ = svc.characters.get(character)  # 404 for a character that does not exist
    return jsonify(emotions=[e.as_json() for e in svc.emotions.profiles(character)])


@bp.post("/emotions")
def create_emotion() -> tuple[Response, int]:
    """A new profile: ``character`` and ``name`` (``id`` defaults to ``<character>-<name>``); 201, 409 when taken."""
    require_key()
    svc = services()
    body = json_body(svc.config.server.limits.max_body_bytes)
    _check_known(body)
    character = body.get("character")
    if not isinstance(character, str) or not character:
        raise ApiError(400, "missing_field", "'character' is required: the id of the character this emotion is for.")
    cid, base = svc.characters.get(character)
    name = str(text_field(body, "name", TEXT_LIMITS["name"], required=True))
    if len(svc.emotions.profiles(cid)) >= MAX_PER_CHARACTER:
        raise ApiError(409, "too_many_emotions", f"{cid!r} has {MAX_PER_CHARACTER} emotions; delete one first.")
    emotion_id = _emotion_id(body.get("id", f"{cid}-{_slug(name)}"[:64].rstrip("-_")))
    fresh = Emotion(
        emotion_id, cid, name, exaggeration=base.exaggeration, temperature=base.temperature, cfg_weight=base.cfg_weight
    )
    stored = svc.emotions.put(_apply(fresh, body), create=True)
    prepare_or_warn(svc.emotions.voice_spec(stored))
    return jsonify(stored.as_json()), 201


@bp.get("/emotions/<emotion_id>")
def get_emotion(emotion_id: str) -> Response:
    """One profile."""
    require_key()
    return jsonify(services().emotions.get(emotion_id).as_json())


@bp.put("/emotions/<emotion_id>")
def update_emotion(emotion_id: str) -> Response:
    """Change the given fields of a profile; the others stay. Its character and id cannot change."""
    require_key()
    svc = services()
    body = json_body(svc.config.server.limits.max_body_bytes)
    _check_known(body)
    current = svc.emotions.get(emotion_id)
    for fixed, value in (("id", current.emotion_id), ("character", current.character)):
        if fixed in body and body[fixed] != value:
            raise ApiError(400, "bad_field", f"'{fixed}' cannot change; create a new emotion instead.")
    stored = svc.emotions.put(_apply(current, body), create=False)
    prepare_or_warn(svc.emotions.voice_spec(stored))
    return jsonify(stored.as_json())


@bp.delete("/emotions/<emotion_id>")
def delete_emotion(emotion_id: str) -> tuple[str, int]:
    """Remove a profile; its clips stay in the voice library."""
    require_key()
    services().emotions.remove(emotion_id)
    return "", 204


@bp.post("/emotions/<emotion_id>/test")
def test_emotion(emotion_id: str) -> Response:
    """Speak ``text`` (or a stock line) with the profile: a WAV file."""
    require_key()
    svc = services()
    body = json_body(svc.config.server.limits.max_body_bytes) if request.content_length else {}
    emotion = svc.emotions.get(emotion_id)
    text = text_field(body, "text", svc.config.server.limits.max_text_chars, required=False)
    text = text or f"This is how I sound when I am {emotion.name.lower()}."
    if not has_speech(text):
        raise ApiError(400, "nothing_to_say", "'text' has nothing to speak: no words, only symbols, emoji or markup.")
    spec = dataclasses.replace(svc.emotions.voice_spec(emotion), **number_fields(body))
    t0 = time.monotonic()
    with svc.slots.hold():  # Busy → 503 at the edge
        pcm = b"".join(svc.pipeline.speak_sentences(text, spec, threading.Event()))
    took = time.monotonic() - t0
    rate = svc.pipeline.sample_rate
    return Response(
        wav_header(rate, data_bytes=len(pcm)) + pcm,
        mimetype="audio/wav",
        headers={
            "X-Audio-Duration": f"{len(pcm) / 2 / rate:.3f}",
            "X-Generation-Time": f"{took:.3f}",
            "X-Emotion": emotion.emotion_id,
        },
    )


@bp.post("/emotions/<emotion_id>/voices")
def add_emotion_voice(emotion_id: str) -> tuple[Response, int]:
    """Upload a clip for the profile (as ``POST /voices``: multipart ``audio``, ``id`` optional); it speaks with it."""
    require_key()
    svc = services()
    emotion = svc.emotions.get(emotion_id)
    data, fields = audio_upload(svc.config.server.voices.max_upload_bytes)
    with svc.library.lock:  # the id chosen, the clip stored and the profile pointed at it: one step
        voice_id = _sample_id(emotion, fields.get("id") or fields.get("name"))
        base = svc.emotions.voice_spec(emotion)

        def verify() -> None:  # runs under the library lock: a failure puts back what was there
            svc.primary.prepare_voice(dataclasses.replace(base, clip=str(svc.library.path(voice_id))))

        stored = svc.library.add(voice_id, data, verify=verify)
        updated = svc.emotions.add_voice(emotion.emotion_id, voice_id)
    return jsonify(voice=stored.info.as_json(), emotion=updated.as_json()), 201 if stored.created else 200


def _check_known(body: Mapping[str, Any]) -> None:
    unknown = sorted(set(body) - _ACCEPTED)
    if unknown:
        accepted = ", ".join(sorted(_ACCEPTED))
        raise ApiError(400, "unknown_field", f"Unknown field(s): {', '.join(unknown)}. Accepted: {accepted}.")


def _apply(emotion: Emotion, body: Mapping[str, Any]) -> Emotion:
    """The profile with the bounded fields of ``body`` applied (400/413 naming a bad one)."""
    changes: dict[str, Any] = dict(number_fields(body))
    for name, max_chars in TEXT_LIMITS.items():
        if name in body:
            changes[name] = text_field(body, name, max_chars, required=name == "name") or ""
    if "voices" in body:
        voices = body["voices"]
        if not isinstance(voices, list) or len(voices) > _MAX_VOICES:
            raise ApiError(400, "bad_field", f"'voices' must be a list of up to {_MAX_VOICES} library voice ids.")
        changes["voices"] = tuple(dict.fromkeys(check_voice_id(v) for v in voices))
    return dataclasses.replace(emotion, **changes)


def _emotion_id(value: object) -> str:
    try:
        return check_voice_id(value)
    except BadVoiceId:
        raise ApiError(400, "bad_emotion_id", "'id' is 1-64 characters: a-z, 0-9, '-' or '_'.") from None


def _slug(name: str) -> str:
    """A name as an id part: lowercase letters and digits, other runs as one '-'."""
    out = "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in name.lower())
    return "-".join(part for part in out.split("-") if part)[:40] or "emotion"


def _sample_id(emotion: Emotion, given: str | None) -> str:
    """The library id for a new clip: the one given (409 when another's), else ``<emotion>-<n>``."""
    svc = services()
    if given:
        voice_id = check_voice_id(given)
        if voice_id in svc.characters or (voice_id in svc.library and voice_id not in emotion.voices):
            raise ApiError(409, "name_taken", f"{voice_id!r} is taken; pick another name for the clip.")
        return voice_id
    stem = emotion.emotion_id[:56]
    for n in range(1, 1000):
        candidate = f"{stem}-{n}"
        if candidate not in svc.library and candidate not in svc.characters:
            return candidate
    raise ApiError(409, "library_full", "This emotion has too many clips; delete some first.")
