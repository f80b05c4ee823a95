"""How a request picks the voice it is spoken with: character, then emotion profile, then its own knobs.

``emotion`` (a profile's id or name, of the request's character) and the knobs ``exaggeration``,
``temperature``, ``cfg_weight`` and ``max_tokens`` are accepted by /process-text, /v1/audio/speech
and /generate-audio as JSON, and by /process-audio as form fields. Each knob is bounded like a
character's; ``max_tokens`` caps the speech tokens of each sentence (Chatterbox speaks 25 a second)
below ``server.tts.chatterbox.max_tokens``. An unknown emotion is a 404, never silently ignored.
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
MAX_TOKENS: Final = "max_tokens"
"""Speech tokens one sentence may use, a whole number from 1 to the configured ceiling."""
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
    if MAX_TOKENS in body:
        ceiling = services().config.server.tts.chatterbox.max_tokens
        value = body[MAX_TOKENS]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
            raise ApiError(400, "out_of_range", f"'{MAX_TOKENS}' must be a whole number from 1 to {ceiling}.")
        fields[MAX_TOKENS] = value
    return fields


def form_knobs(form: Mapping[str, str]) -> dict[str, Any]:
    """A multipart form's ``emotion`` and knobs (all text) as the numbers ``turn_voice`` takes; 400 if not numbers."""
    body: dict[str, Any] = {}
    if form.get(EMOTION):
        body[EMOTION] = form[EMOTION]
    for name in (*NUMBER_LIMITS, MAX_TOKENS):
        text = form.get(name, "").strip()
        if not text:
            continue
        try:
            body[name] = int(text) if name == MAX_TOKENS else float(text)
        except ValueError:
            kind = "a whole number" if name == MAX_TOKENS else "a number"
            raise ApiError(400, "bad_field", f"'{name}' must be {kind}.") from None
    return body


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
