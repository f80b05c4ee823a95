"""Replies as files: ``POST /generate-audio`` (text → a stored WAV and its URL, or base64) and ``GET /outputs/<name>``.

The same text, voice and settings on the same day map to the same stored file, which is reused
instead of spoken again. Storage trouble is a 503 before any voice time is spent when it can be
seen up front, and never leaves a partial file (S3 PUTs and local writes are whole or nothing).
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
from typing import Any, Final

from flask import Blueprint, Response, jsonify, request, send_file

from cloud_server.errors import ApiError, error_response
from cloud_server.pipeline.sentences import has_speech
from cloud_server.routes.disconnect import cancel_on_disconnect
from cloud_server.routes.knobs import turn_voice
from cloud_server.routes.request import character_field, json_body, require_key, text_field
from cloud_server.services import Services, services
from cloud_server.storage import AudioKey, StorageError
from cloud_server.storage.base import settings_digest
from cloud_server.storage.local import LocalStore
from cloud_server.tts.base import VoiceSpec
from cloud_server.tts.engines import descriptor
from common.wav import HEADER_BYTES, SAMPLE_WIDTH, wav_header

bp = Blueprint("outputs_api", __name__)
RETURN_FORMATS: Final = ("url", "base64")
MIN_EXPIRES_SECONDS: Final = 1


@bp.app_errorhandler(StorageError)
def _storage_error(err: StorageError) -> Response:
    retry = str(services().config.server.limits.retry_after_seconds)
    return error_response(503, "storage_unavailable", f"Storage is not available: {err}", {"Retry-After": retry})


@bp.post("/generate-audio")
def generate_audio() -> Response:
    """Speak ``text`` in a character's voice and hand back the whole WAV as a URL or as base64."""
    require_key()
    svc = services()
    limits = svc.config.server.limits
    body = json_body(limits.max_body_bytes)
    text = str(text_field(body, "text", limits.max_text_chars, required=True))
    if not has_speech(text):
        raise ApiError(400, "nothing_to_say", "'text' has nothing to speak: no words, only symbols, emoji or markup.")
    character_id, _character = svc.characters.get(character_field(body))
    voice = turn_voice(body, character_id)
    return_format = body.get("return_format", "url")
    if return_format not in RETURN_FORMATS:
        raise ApiError(400, "bad_return_format", "'return_format' must be 'url' or 'base64'.")
    presigned = body.get("presigned", True)
    if not isinstance(presigned, bool):
        raise ApiError(400, "bad_field", "'presigned' must be true or false.")
    expires_in = _expires_in(svc, body.get("expires_in"))
    if return_format == "url" and not presigned and not svc.storage.can_link_publicly():
        raise ApiError(400, "no_public_url", "Public URLs are not configured (server.storage.s3.public_base_url); "
                                             "ask for a presigned one.")
    rate = svc.pipeline.sample_rate
    answer: dict[str, Any] = {"character": character_id, "format": "wav", "sample_rate": rate}
    if return_format == "base64":
        wav = _speak(svc, text, voice)
        return jsonify(audio_base64=base64.b64encode(wav).decode("ascii"), duration=_seconds(len(wav), rate), **answer)
    identity = descriptor(svc.primary.name).cache_identity(svc.config.server.tts)
    key = AudioKey(character_id, dt.datetime.now(dt.UTC).date(), settings_digest(text, voice, identity, rate))
    name = svc.storage.name(key)
    state = svc.storage.status()  # known trouble → 503 before the voice is used
    if state["ok"] is False:
        raise StorageError(state["problem"])
    size = svc.storage.size(name)
    reused = size is not None
    if size is None:
        wav = _speak(svc, text, voice)
        svc.storage.put(name, wav)
        size = len(wav)
    link = svc.storage.link(name, presigned=presigned, expires_in=expires_in, base_url=request.host_url)
    return jsonify(
        audio_url=link.url,
        expires_at=link.expires_at.isoformat(timespec="seconds") if link.expires_at else None,
        duration=_seconds(size, rate),
        reused=reused,
        **answer,
    )


@bp.get("/outputs/<name>")
def output_file(name: str) -> Response:
    """A file /generate-audio stored in the data directory (with the key); 404 for anything else."""
    require_key()
    store = services().storage
    path = store.path(name) if isinstance(store, LocalStore) else None
    if path is None:
        raise ApiError(404, "unknown_output", "No such output file (it may have expired).")
    return send_file(path, mimetype="audio/wav", max_age=0)


def _expires_in(svc: Services, value: Any) -> int:
    s3 = svc.config.server.storage.s3
    if value is None:
        return s3.presign_seconds
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or not MIN_EXPIRES_SECONDS <= value <= s3.max_presign_seconds:
        raise ApiError(400, "bad_expires_in", f"'expires_in' must be whole seconds from {MIN_EXPIRES_SECONDS} to "
                                              f"{s3.max_presign_seconds}.")
    return value


def _speak(svc: Services, text: str, voice: VoiceSpec) -> bytes:
    """The whole WAV, through the reply pipeline's sentence path (same splitter, fallback and caps)."""
    cancel = threading.Event()
    with svc.slots.hold(), cancel_on_disconnect(request.environ, cancel):  # Busy → 503 at the edge
        pcm = b"".join(svc.pipeline.speak_sentences(text, voice, cancel))
    if cancel.is_set():
        raise ApiError(499, "client_closed_request", "The caller hung up before the audio was ready.")
    return wav_header(svc.pipeline.sample_rate, data_bytes=len(pcm)) + pcm


def _seconds(wav_bytes: int, rate: int) -> float:
    return round(max(0, wav_bytes - HEADER_BYTES) / SAMPLE_WIDTH / rate, 3)
