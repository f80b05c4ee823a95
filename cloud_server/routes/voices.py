"""Routes for speech in and the people who speak: /process-audio, /characters, /voices, /metrics."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, send_file

from cloud_server.audio_codec import AudioError, DecodedAudio, decode_audio
from cloud_server.errors import ApiError, error_response
from cloud_server.library.voices import VoiceError, check_voice_id
from cloud_server.pipeline.admission import Busy
from cloud_server.pipeline.reply import Turn
from cloud_server.routes.core import stream_turn
from cloud_server.routes.request import (
    character_field,
    history_field,
    json_body,
    require_key,
    session_id_field,
    text_field,
)
from cloud_server.services import services
from cloud_server.stt import TranscriberBusy
from cloud_server.tts.base import VoiceSpec
from cloud_server.tts.engines import descriptor
from common.protocol import Field, Header, Route
from common.wav import wav_header

_LOGGER = logging.getLogger(__name__)
bp = Blueprint("voice_api", __name__)
_RAW_AUDIO_TYPES = ("audio/", "application/octet-stream")


@bp.app_errorhandler(AudioError)
def _audio_error(err: AudioError) -> Response:
    return error_response(err.status, err.code, str(err))


@bp.app_errorhandler(VoiceError)
def _voice_error(err: VoiceError) -> Response:
    return error_response(err.status, err.code, str(err))


def audio_upload(max_bytes: int) -> tuple[bytes, dict[str, str]]:
    """The uploaded audio (multipart field ``audio`` or a raw ``audio/*`` body) and the other fields."""
    if request.content_length is not None and request.content_length > max_bytes + 65536:
        raise ApiError(413, "audio_too_large", f"The upload is over {max_bytes} bytes.")
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("audio")
        if upload is None:
            raise ApiError(400, "missing_audio", "Send the recording in the multipart field 'audio'.")
        data = upload.read(max_bytes + 1)
        return data, {k: v for k, v in request.form.items()}
    if request.mimetype.startswith(_RAW_AUDIO_TYPES):
        return request.get_data(cache=False), dict(request.args.items())
    raise ApiError(
        415,
        "unsupported_media_type",
        "Send audio as multipart/form-data (field 'audio') or as a raw audio/wav, audio/flac, audio/ogg "
        "or audio/mpeg body.",
    )


@dataclass(frozen=True)
class Heard:
    """An upload decoded and transcribed, with the clock readings around each step."""

    audio: DecodedAudio
    text: str
    t0: float
    t1: float
    t2: float


def hear(data: bytes) -> Heard:
    """Decode an upload and run the server's Whisper on it (one place for /process-audio and /transcribe)."""
    svc = services()
    limits = svc.config.server.limits
    t0 = time.monotonic()
    audio = decode_audio(data, max_bytes=limits.max_audio_bytes, max_seconds=limits.max_audio_seconds)
    t1 = time.monotonic()
    try:
        transcript = svc.transcriber.transcribe(audio.samples, wait_seconds=limits.max_stt_wait_seconds)
    except TranscriberBusy as err:
        retry = str(limits.retry_after_seconds)
        raise ApiError(503, "busy", f"{err}; try again shortly.", {"Retry-After": retry}) from err
    t2 = time.monotonic()
    svc.metrics.stt.observe(t2 - t1)
    return Heard(audio, transcript, t0, t1, t2)


@bp.post(Route.TRANSCRIBE)
def transcribe() -> Response:
    """Speech to text only (the Wyoming bridge's STT): the same upload as /process-audio → ``{"text"}``."""
    require_key()
    data, _fields = audio_upload(services().config.server.limits.max_audio_bytes)
    heard = hear(data)
    _LOGGER.info("Transcribed %.1f s: %d chars in %.2f s", heard.audio.duration, len(heard.text), heard.t2 - heard.t1)
    return jsonify(text=heard.text, duration=round(heard.audio.duration, 3))


@bp.post(Route.PROCESS_AUDIO)
def process_audio() -> Response:
    """The caller's recording → transcript → the same streamed spoken reply as /process-text."""
    require_key()
    svc = services()
    limits = svc.config.server.limits
    if svc.slots.full():  # refuse before spending Whisper time on a reply we cannot give
        raise Busy
    data, fields = audio_upload(limits.max_audio_bytes)
    session_id = session_id_field(fields)  # a bad id or history is a 400 before Whisper runs
    history = history_field(fields, Field.HISTORY, limits.max_history_messages, limits.max_history_chars)
    heard = hear(data)
    transcript, audio, t0, t1, t2 = heard.text, heard.audio, heard.t0, heard.t1, heard.t2
    if not transcript:
        raise ApiError(400, "no_speech", "No speech was heard in the recording.")
    prompt = text_field(fields, Field.PROMPT, limits.max_prompt_chars, required=False)
    character_id, character = svc.characters.get(character_field(fields))
    turn = Turn(
        text=transcript[: limits.max_text_chars],
        session_id=session_id,
        character_id=character_id,
        character=character,
        voice=svc.characters.voice_spec(character_id),
        prompt=prompt,
        transcript=transcript,
        history=history,
    )
    _LOGGER.info("Heard %.1f s (%s): %d chars in %.2f s", audio.duration, audio.source_format, len(transcript), t2 - t1)
    headers = {
        Header.TRANSCRIPT: quote(transcript, safe=""),
        Header.INPUT_AUDIO_DURATION: f"{audio.duration:.3f}",
        "Server-Timing": f"decode;dur={(t1 - t0) * 1000:.1f}, stt;dur={(t2 - t1) * 1000:.1f}",
    }
    return stream_turn(turn, headers)


@bp.get("/characters")
def list_characters() -> Response:
    """Who one can call, with their voice and the knobs the active model ignores."""
    require_key()
    svc = services()
    return jsonify(
        characters=svc.characters.listing(ignored_knobs()),
        default=svc.config.server.default_character,
        engine=svc.primary.name,
    )


@bp.post("/characters/<character_id>/voice")
def switch_voice(character_id: str) -> Response:
    """Make a character speak with a library voice (``{"voice": id}``) or its own again (``null``)."""
    require_key()
    svc = services()
    body = json_body(svc.config.server.limits.max_body_bytes)
    if "voice" not in body:
        raise ApiError(400, "bad_json", 'Send {"voice": "<library voice id>"} or {"voice": null}.')
    voice_id = body["voice"]
    spec = svc.characters.set_voice(character_id, None if voice_id is None else check_voice_id(voice_id))
    prepare_or_warn(spec)
    entry = next(c for c in svc.characters.listing(ignored_knobs()) if c["id"] == character_id)
    return jsonify(entry)


@bp.get("/characters/<character_id>/greeting")
def greeting(character_id: str) -> Response:
    """The character's greeting as a WAV file, synthesized once and then served from the phrase cache."""
    require_key()
    cid, character = services().characters.get(character_id)
    return _spoken_phrase(cid, character.greeting)


@bp.get("/characters/<character_id>/filler")
def filler(character_id: str) -> Response:
    """The character's thinking filler ("Hmm, let me think."), for the phone to play while a reply is late."""
    require_key()
    cid, character = services().characters.get(character_id)
    return _spoken_phrase(cid, character.filler)


def _spoken_phrase(cid: str, text: str) -> Response:
    """A short text in the character's voice as one WAV file (from the phrase cache after the first time)."""
    svc = services()
    spec = svc.characters.voice_spec(cid)
    t0 = time.monotonic()
    with svc.slots.hold():  # Busy → 503 at the edge
        pcm = b"".join(svc.pipeline.speak_sentences(text, spec, threading.Event()))
    took = time.monotonic() - t0
    seconds = len(pcm) / 2 / svc.pipeline.sample_rate
    return Response(
        wav_header(svc.pipeline.sample_rate, data_bytes=len(pcm)) + pcm,
        mimetype="audio/wav",
        headers={
            "X-Audio-Duration": f"{seconds:.3f}",
            "X-Generation-Time": f"{took:.3f}",
            "Server-Timing": f"tts;dur={took * 1000:.1f}",
        },
    )


@bp.get("/voices")
def list_voices() -> Response:
    """The uploaded voices."""
    require_key()
    svc = services()
    return jsonify(
        voices=[v.as_json() for v in svc.library.list()],
        min_seconds=svc.library.min_seconds,
        max_seconds=services().config.server.voices.max_seconds,
    )


@bp.post("/voices")
def add_voice() -> tuple[Response, int]:
    """Upload a reference clip (multipart ``audio`` + ``id``, or a raw body with ``?id=``); 201 when new."""
    require_key()
    svc = services()
    data, fields = audio_upload(svc.config.server.voices.max_upload_bytes)
    voice_id = check_voice_id(fields.get("id") or fields.get("name"))
    if voice_id in svc.characters:
        raise ApiError(409, "name_taken", f"A character is called {voice_id!r}; pick another name for the voice.")

    def verify() -> None:  # runs under the library lock: a failure puts back what was there
        svc.primary.prepare_voice(svc.characters.library_voice_spec(voice_id))
        for cid in svc.characters.overrides.users_of(voice_id):
            svc.primary.prepare_voice(svc.characters.voice_spec(cid))

    stored = svc.library.add(voice_id, data, verify=verify)
    return jsonify(stored.info.as_json() | {"changed": stored.changed}), (201 if stored.created else 200)


@bp.delete("/voices/<voice_id>")
def delete_voice(voice_id: str) -> tuple[str, int]:
    """Remove an uploaded voice; 409 while a character still speaks with it."""
    require_key()
    svc = services()
    check_voice_id(voice_id)
    svc.library.delete(
        voice_id, users=lambda: [*svc.characters.overrides.users_of(voice_id), *svc.emotions.users_of(voice_id)]
    )
    return "", 204


@bp.get("/voices/<voice_id>/audio")
def voice_audio(voice_id: str) -> Response:
    """The stored clip itself (24 kHz mono WAV), to hear it before using it."""
    require_key()
    return send_file(services().library.path(check_voice_id(voice_id)), mimetype="audio/wav", max_age=0)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus scrape target (same key as the API; Prometheus sends it as a bearer token)."""
    require_key()
    return services().metrics.exposition()


def ignored_knobs() -> list[str]:
    """The character knobs the speaking engine does not use (from its descriptor)."""
    svc = services()
    return list(descriptor(svc.primary.name).ignored_knobs(svc.config.server.tts))


def prepare_or_warn(spec: VoiceSpec) -> None:
    """Prepare a voice now so its first use is quick; a failure is only logged (it is tried again on use)."""
    try:
        services().primary.prepare_voice(spec)
    except Exception as err:
        _LOGGER.warning("Voice %s could not be prepared now (it will be tried on use): %s", spec.voice_id, err)
