"""API-key check for every route from outside: Bearer or X-API-Key, compared in constant time."""

from __future__ import annotations

import hmac

from flask import request

from cloud_server.errors import ApiError


def presented_key() -> str | None:
    """The key the caller sent, from ``Authorization: Bearer`` or ``X-API-Key``."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("X-API-Key")


def check_key(expected: str | None) -> None:
    """Raise 401 unless the request carries ``expected``; ``None`` means auth is off (dev flag)."""
    if expected is None:
        return
    given = presented_key()
    if not given:
        raise ApiError(401, "missing_key", "Send the API key as 'Authorization: Bearer KEY' or 'X-API-Key'.")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(401, "wrong_key", "The API key is not valid.")
