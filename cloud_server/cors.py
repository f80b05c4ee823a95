"""CORS for the origins in ``server.cors_origins`` only (none by default), through flask-cors.

A listed origin's page may call the JSON API with the key in ``Authorization`` or ``X-API-Key``;
preflight OPTIONS is answered for it. Credentials (the console's cookie) are never allowed across
origins: the console is same-origin, and a cross-origin caller must present the key itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from flask import Flask
from flask_cors import CORS

from common.config import ConfigError

ORIGIN: Final = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
"""An exact origin: scheme, host, optional port; no path, no wildcard (flask-cors would read one as a regex)."""
ALLOWED_HEADERS: Final = ("Authorization", "X-API-Key", "Content-Type")
ALLOWED_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")
EXPOSED_HEADERS: Final = (
    "X-Session-Id", "X-Character", "X-Sample-Rate", "X-Transcript",
    "X-Audio-Duration", "X-Audio-Truncated", "X-Generation-Time", "Retry-After",
)
"""Reply headers a listed origin's script may read (browsers hide all but a few otherwise)."""


def allow_configured_origins(app: Flask, origins: Sequence[str]) -> None:
    """Answer CORS for exactly ``origins``; with none, add nothing (browsers then refuse every other origin)."""
    for index, origin in enumerate(origins):
        if not ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"server.cors_origins[{index}]: expected an origin like https://app.example.com, got {origin!r}"
            )
    if not origins:
        return
    CORS(
        app,
        origins=list(origins),
        allow_headers=list(ALLOWED_HEADERS),
        methods=list(ALLOWED_METHODS),
        expose_headers=list(EXPOSED_HEADERS),
        supports_credentials=False,
        max_age=600,
    )
