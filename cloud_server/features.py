"""The parts that grow the core server into what users of other Chatterbox servers expect.

``init_features(app)`` is called once by ``create_app`` after the core services exist: it adds the
voice library and character book (runtime voice switches reach /process-text through
``Services.voice_for``), server-side Whisper,
metrics, and the /process-audio, characters, voices, OpenAI and /metrics routes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import Flask, current_app

from cloud_server.library.characters import CharacterBook
from cloud_server.library.voices import VoiceLibrary, VoiceOverrides
from cloud_server.metrics import Metrics, init_metrics
from cloud_server.services import Services
from cloud_server.stt import ServerTranscriber
from cloud_server.tts.base import VoiceSpec
from common.config import expand_path

_LOGGER = logging.getLogger(__name__)
EXTENSION = "ai_telephone_features"


@dataclass
class Features:
    """Per-app state of the feature routes."""

    library: VoiceLibrary
    characters: CharacterBook
    transcriber: ServerTranscriber
    metrics: Metrics


def features() -> Features:
    """The current app's Features."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def prepare(svc: Services, spec: VoiceSpec) -> None:
    """Precompute a voice's conditionals now, so its first request does not pay for them."""
    svc.primary.prepare_voice(spec)


@contextmanager
def voice_slot(svc: Services) -> Iterator[None]:
    """Hold one of the voice model's admission slots for a whole (non-streamed) synthesis; 503 when full."""
    release = svc.slots.admit(svc.config.server.limits.retry_after_seconds)
    try:
        yield
    finally:
        release()


def init_features(app: Flask) -> Features:
    """Build the feature state on top of the core services and register the feature routes."""
    from cloud_server.routes import openai as openai_routes
    from cloud_server.routes import voices as voice_routes

    svc: Services = app.extensions["ai_telephone"]
    server = svc.config.server
    data_dir = expand_path(server.data_dir)
    library = VoiceLibrary(data_dir / "voices", server.voices, model=server.tts.chatterbox.model)
    book = CharacterBook(server, library, VoiceOverrides.in_data_dir(data_dir))
    svc.characters = book
    transcriber = ServerTranscriber(server.stt)
    transcriber.load()
    metrics = init_metrics(app)
    svc.pipeline.listeners.append(metrics.observe_turn)
    state = Features(library=library, characters=book, transcriber=transcriber, metrics=metrics)
    app.extensions[EXTENSION] = state
    # Library voices and runtime switches were not known to the core's start-up pass: prepare them
    # too (a disk load when their conditionals were computed before, so a restart recomputes nothing).
    specs = [book.library_voice_spec(v.voice_id) for v in library.list()]
    specs += [book.voice_spec(cid) for cid in book.overrides.all() if cid in book]
    for spec in specs:
        try:
            prepare(svc, spec)
        except Exception as err:
            _LOGGER.warning("Voice %s could not be prepared at start: %s", spec.voice_id, err)
    app.register_blueprint(voice_routes.bp)
    app.register_blueprint(openai_routes.bp)
    _LOGGER.info("Features ready: %d library voices, Whisper on %s", len(library.list()), transcriber.device)
    return state
