"""OpenAI-compatible speech, as Open WebUI, SillyTavern and Home Assistant bridges call it.

``POST /v1/audio/speech`` speaks ``input`` with a character or a library voice. Every format comes
out at 24 kHz mono (OpenAI's rate; Chatterbox's own). ``wav`` and ``pcm`` stream sentence by
sentence; ``mp3``, ``flac`` and ``opus`` are encoded whole once the text is spoken (their headers
need the length), and carry ``X-Audio-Duration`` / ``X-Generation-Time``. With
``stream_format: "sse"`` the audio arrives as ``speech.audio.delta`` events: one per sentence for
``pcm``/``wav``, one with the whole file for the compressed formats. ``instructions`` is accepted
(it must be a string) and not used: the character sets how the voice sounds.

Output is bounded: text that would clearly speak longer than ``server.limits.max_speech_seconds``
(estimated at a fast speaking rate, after ``speed``) is refused up front with 413, and the audio
is cut at that length whatever the estimate said (``X-Audio-Truncated: true`` on whole files).
A caller who hangs up stops the work: streams at their next write, whole files through
:mod:`cloud_server.routes.disconnect`.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any, Final

from flask import Blueprint, Response, jsonify, request

from cloud_server.audio_codec import (
    CONTENT_TYPES,
    OPENAI_PCM_RATE,
    RESPONSE_FORMATS,
    SUPPORTED_RESPONSE_FORMATS,
    change_speed,
    encode_audio,
)
from cloud_server.errors import ApiError
from cloud_server.library.voices import VoiceError
from cloud_server.metrics import Metrics
from cloud_server.pipeline.reply import TurnStats
from cloud_server.pipeline.sentences import has_speech
from cloud_server.routes.disconnect import cancel_on_disconnect
from cloud_server.routes.knobs import emotion_field, turn_voice, with_knobs
from cloud_server.routes.request import json_body, require_key, streamed
from cloud_server.services import Services, services
from cloud_server.tts.base import VoiceSpec
from common.wav import SAMPLE_WIDTH, float_to_pcm16, pcm16_to_float, resample_float, wav_header

_LOGGER = logging.getLogger(__name__)
bp = Blueprint("openai_api", __name__, url_prefix="/v1")

MAX_INPUT_CHARS: Final = 4096
SEED_MODELS: Final = ("chatterbox-turbo", "chatterbox-tts")
"""Names the earlier Chatterbox-Turbo server (seed 003) took; clients written for it keep working."""
MODELS: Final = ("chatterbox", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", *SEED_MODELS)
"""Accepted ``model`` names: all are served by the one loaded voice model (whichever is configured)."""
_BODY_BYTES: Final = 65536
FAST_SPEECH_CHARS_PER_SECOND: Final = 25.0
"""Faster than any voice here speaks (about 15): an estimate over the cap at this rate is surely over."""


@bp.get("/models")
def list_models() -> Response:
    """The model names clients may send (all served by the loaded voice model)."""
    require_key()
    return jsonify(
        object="list", data=[{"id": m, "object": "model", "created": 0, "owned_by": "ai-telephone"} for m in MODELS]
    )


@bp.get("/audio/voices")
def list_voices() -> Response:
    """Characters and library voices usable as ``voice``."""
    require_key()
    book = services().characters
    characters = [{"id": c["id"], "name": c["display_name"], "type": "character"} for c in book.listing("")]
    library = [{"id": v.voice_id, "name": v.voice_id, "type": "library"} for v in book.library.list()]
    return jsonify(voices=characters + library)


@bp.post("/audio/speech")
def speech() -> Response:
    """Speak ``input`` in the requested voice and format."""
    require_key()
    svc = services()
    body = json_body(_BODY_BYTES)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "missing_field", f"'model' is required (one of: {', '.join(MODELS)}).")
    if model not in MODELS:
        raise ApiError(400, "unknown_model", f"Unknown model {model!r}; use one of: {', '.join(MODELS)}.")
    text = _input(body.get("input"))
    voice = _voice(body.get("voice"), body)
    fmt = body.get("response_format") or "mp3"
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, "bad_response_format", f"'response_format' must be one of {', '.join(RESPONSE_FORMATS)}.")
    if fmt not in SUPPORTED_RESPONSE_FORMATS:
        raise ApiError(
            400, "unsupported_response_format", f"{fmt} is not available here; use mp3, opus, flac, wav or pcm."
        )
    speed = _speed(body.get("speed", 1.0))
    _check_length(text, speed, svc.config.server.limits.max_speech_seconds)
    stream_format = body.get("stream_format") or "audio"
    if stream_format not in ("audio", "sse"):
        raise ApiError(400, "bad_stream_format", "'stream_format' must be 'audio' or 'sse'.")
    # Accepted and not used: the voice's style comes from the character (README, HTTP API). Refusing it
    # would break clients that always send it with gpt-4o-mini-tts.
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise ApiError(400, "bad_field", "'instructions' must be a string.")
    if fmt in ("wav", "pcm"):
        return _streamed(svc, text, voice, fmt, speed, sse=stream_format == "sse")
    return _whole(svc, text, voice, fmt, speed, sse=stream_format == "sse")


def _input(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "missing_field", "'input' must be a non-empty string.")
    if len(value) > MAX_INPUT_CHARS:
        raise ApiError(400, "input_too_long", f"'input' is {len(value)} characters; the limit is {MAX_INPUT_CHARS}.")
    if not has_speech(value):
        raise ApiError(400, "nothing_to_say", "'input' has nothing to speak: no words, only symbols, emoji or markup.")
    return value.strip()


def _check_length(text: str, speed: float, max_seconds: float) -> None:
    """413 when the text surely speaks longer than the cap at this speed (estimated at a fast rate)."""
    estimate = len(text) / FAST_SPEECH_CHARS_PER_SECOND / speed
    if estimate > max_seconds:
        raise ApiError(
            413,
            "speech_too_long",
            f"At speed {speed:g}, {len(text)} characters make at least {estimate:.0f} s of audio; the limit is "
            f"{max_seconds:g} s. Send less text or a higher speed.",
        )


def _voice(value: Any, body: dict[str, Any]) -> VoiceSpec:
    """A character id or a library voice id (also as ``{"id": ...}``), never a silent default; then the
    request's ``emotion`` (a character's profile) and knobs."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise ApiError(
            400, "missing_field", "'voice' is required: a character or an uploaded voice (GET /v1/audio/voices)."
        )
    characters = services().characters
    if value in characters and emotion_field(body) is not None:
        return turn_voice(body, value)
    try:
        spec = characters.resolve(value)
    except VoiceError as err:
        raise ApiError(400, "unknown_voice", str(err)) from err
    return with_knobs(spec, body)


def _speed(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.25 <= float(value) <= 4.0:
        raise ApiError(400, "bad_speed", "'speed' must be a number from 0.25 to 4.0.")
    return float(value)


def _sentences(
    svc: Services,
    text: str,
    voice: VoiceSpec,
    speed: float,
    cancel: threading.Event,
    stats: TurnStats,
    capped: threading.Event | None = None,
) -> Iterator[bytes]:
    """Each sentence as PCM16 at 24 kHz, at the requested speed; the audio ends at max_speech_seconds (``capped``)."""
    rate = svc.pipeline.sample_rate
    room = int(svc.config.server.limits.max_speech_seconds * OPENAI_PCM_RATE) * SAMPLE_WIDTH
    for block in svc.pipeline.speak_sentences(text, voice, cancel, stats):
        samples = resample_float(pcm16_to_float(block), rate, OPENAI_PCM_RATE)
        pcm = float_to_pcm16(change_speed(samples, OPENAI_PCM_RATE, speed))
        if len(pcm) >= room:
            _LOGGER.warning("Speech cut at the %g s cap", svc.config.server.limits.max_speech_seconds)
            if capped is not None:
                capped.set()
            cancel.set()
            yield pcm[:room]
            return
        room -= len(pcm)
        yield pcm


def _record(metrics: Metrics, stats: TurnStats, started: float) -> None:
    metrics.observe_synthesis(stats.sentence_seconds, stats.audio_seconds)
    metrics.speech_total.observe(time.monotonic() - started)
    if stats.fallback_sentences:
        metrics.fallbacks.labels("tts_sentence").inc(stats.fallback_sentences)


def _sse(kind: str, audio: bytes | None = None) -> bytes:
    event: dict[str, Any] = {"type": f"speech.audio.{kind}"}
    if audio is not None:
        event["audio"] = base64.b64encode(audio).decode("ascii")
    return f"data: {json.dumps(event)}\n\n".encode()


def _streamed(svc: Services, text: str, voice: VoiceSpec, fmt: str, speed: float, sse: bool) -> Response:
    """wav/pcm: each sentence goes out as soon as it is spoken; the slot is held until the stream ends."""
    cancel = threading.Event()
    started = time.monotonic()
    stats = TurnStats(engine=svc.primary.name)
    metrics = svc.metrics

    def body() -> Iterator[bytes]:
        head = wav_header(OPENAI_PCM_RATE) if fmt == "wav" else b""
        if head and not sse:
            yield head
        for pcm in _sentences(svc, text, voice, speed, cancel, stats):
            if sse:
                yield _sse("delta", head + pcm)
                head = b""
            else:
                yield pcm
        if sse:
            yield _sse("done")
        _record(metrics, stats, started)

    mimetype = "text/event-stream" if sse else CONTENT_TYPES[fmt]
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Sample-Rate": str(OPENAI_PCM_RATE)}
    return streamed(body(), mimetype, headers, cancel)


def _whole(svc: Services, text: str, voice: VoiceSpec, fmt: str, speed: float, sse: bool) -> Response:
    """mp3/flac/opus: speak everything, encode once, answer with the length known.

    Nothing is written until the end, so the caller hanging up is noticed on its socket instead
    (499 in the metrics, and the voice model freed at once).
    """
    started = time.monotonic()
    stats = TurnStats(engine=svc.primary.name)
    cancel, capped = threading.Event(), threading.Event()
    with svc.slots.hold(), cancel_on_disconnect(request.environ, cancel):
        pcm = b"".join(_sentences(svc, text, voice, speed, cancel, stats, capped))
    if cancel.is_set() and not capped.is_set():
        raise ApiError(499, "client_closed_request", "The caller hung up before the audio was ready.")
    spoken = time.monotonic()
    data, rate = encode_audio(pcm, OPENAI_PCM_RATE, fmt)
    encoded = time.monotonic()
    _record(svc.metrics, stats, started)
    seconds = len(pcm) / SAMPLE_WIDTH / OPENAI_PCM_RATE
    headers = {
        "X-Audio-Duration": f"{seconds:.3f}",
        "X-Generation-Time": f"{encoded - started:.3f}",
        "X-Sample-Rate": str(rate),
        "Server-Timing": f"tts;dur={(spoken - started) * 1000:.1f}, encode;dur={(encoded - spoken) * 1000:.1f}",
    }
    if capped.is_set():
        headers["X-Audio-Truncated"] = "true"
    if sse:
        return Response(_sse("delta", data) + _sse("done"), mimetype="text/event-stream", headers=headers)
    return Response(data, mimetype=CONTENT_TYPES[fmt], headers=headers)
