"""How a request picks the voice it is spoken with: character, then emotion profile, then its own knobs.

``emotion`` (a profile's id or name, of the request's character) and the knobs ``exaggeration``,
``temperature`` and ``cfg_weight`` are accepted by /process-text, /v1/audio/speech and
/generate-audio. Each knob is bounded like a character's; an unknown emotion is a 404, never
silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Final

from cloud_server.errors import ApiError
from cloud_server.services import services
from cloud_server.tts.base import VoiceSpec

NUMBER_LIMITS: Final = {"exaggeration": (0.25, 2.0), "temperature": (0.05, 5.0), "cfg_weight": (0.0, 1.0)}
"""The range each knob accepts (Chatterbox's own useful ranges)."""
EMOTION: Final = "emotion"


def number_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The bounded knobs present in ``body``; 400 naming the field otherwise."""
    fields: dict[str, Any] = {}
    for name, (low, high) in NUMBER_LIMITS.items():
        if name in body:
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ApiError(400, "bad_field", f"'{name}' must be a number.")
            if not low <= value <= high:
                raise ApiError(400, "out_of_range", f"'{name}' must be between {low} and {high}.")
            fields[name] = float(value)
    return fields


def emotion_field(body: Mapping[str, Any]) -> str | None:
    """The requested emotion (None: the character's own voice); 400 when not a string."""
    value = body.get(EMOTION)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(
            400, "bad_emotion", "'emotion' names one of the character's emotion profiles (GET /emotions?character=…)."
        )
    return value


def turn_voice(body: Mapping[str, Any], character_id: str) -> VoiceSpec:
    """The character's voice, as its named emotion when one is asked for, with the request's knobs on top."""
    svc = services()
    wanted = emotion_field(body)
    knobs = number_fields(body)
    if wanted is None:
        spec = svc.characters.voice_spec(character_id)
    else:
        spec = svc.emotions.voice_spec(svc.emotions.find(character_id, wanted))  # UnknownEmotion → 404
    return dataclasses.replace(spec, **knobs)


def with_knobs(spec: VoiceSpec, body: Mapping[str, Any]) -> VoiceSpec:
    """A voice with the request's knobs on top (a library voice has no emotions)."""
    if emotion_field(body) is not None:
        raise ApiError(400, "bad_emotion", "Emotion profiles belong to characters; name a character as the voice.")
    return dataclasses.replace(spec, **number_fields(body))
