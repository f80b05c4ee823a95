"""The GPU server: the Flask app factory.

Production: ``gunicorn -c cloud_server/gunicorn.conf.py 'cloud_server:create_app()'``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask

from cloud_server.tts.base import TTSEngine
from common.config import Config, load_config

_LOGGER = logging.getLogger(__name__)


def create_app(
    config: Config | None = None,
    env: Mapping[str, str] | None = None,
    engines: tuple[TTSEngine, TTSEngine] | None = None,
) -> Flask:
    """Build the app and load every model once.

    ``config`` lets tests pass their own tree; ``engines`` (primary, fallback) lets several apps in
    one process share voices that are already loaded (Chatterbox takes seconds and gigabytes).
    """
    from cloud_server.cors import allow_configured_origins
    from cloud_server.errors import register_error_handlers
    from cloud_server.metrics import count_responses
    from cloud_server.routes import calls, characters, console, core, docs, emotions, openai, outputs, voices
    from cloud_server.services import EXTENSION, build_services
    from cloud_server.write_timeout import WriteTimeout

    cfg = config if config is not None else load_config(env=env)
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    limits = cfg.server.limits
    # Werkzeug refuses bigger bodies before any view runs (413 JSON via the error handler).
    app.config["MAX_CONTENT_LENGTH"] = max(limits.max_body_bytes, limits.max_audio_bytes) + 65536
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _LOGGER.info("Pre-loading models (llm=%s, tts=%s)", cfg.server.llm.backend, cfg.server.tts.engine)
    svc = build_services(cfg, env, engines)
    app.extensions[EXTENSION] = svc
    register_error_handlers(app, limits.retry_after_seconds)
    count_responses(app, svc.metrics)
    allow_configured_origins(app, cfg.server.cors_origins)
    blueprints = (core.bp, voices.bp, characters.bp, emotions.bp, calls.bp, openai.bp, outputs.bp, console.bp, docs.bp)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    app.wsgi_app = WriteTimeout(app.wsgi_app, limits.write_timeout_seconds)  # type: ignore[method-assign]
    _LOGGER.info("Ready: voice %s (fallback %s), LLM %s", svc.primary.name, svc.fallback.name, cfg.server.llm.backend)
    return app
