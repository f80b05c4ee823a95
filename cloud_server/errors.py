"""One error type and one JSON handler: every failure reaches the client as a clear 4xx/5xx JSON."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from cloud_server.pipeline.admission import Busy

_LOGGER = logging.getLogger(__name__)


class ApiError(Exception):
    """An error meant for the caller: HTTP status, a stable code and a sentence a person understands."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The JSON body every error uses: ``{"error": {"code", "message"}}``."""
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def busy_error(retry_after_seconds: int) -> ApiError:
    """The 503 a caller gets when every reply slot is taken."""
    return ApiError(
        503, "busy", "All voice slots are busy; try again shortly.", {"Retry-After": str(retry_after_seconds)}
    )


def register_error_handlers(app: Flask, retry_after_seconds: int) -> None:
    """Turn ApiError, a full reply gate, werkzeug's HTTP errors and anything unexpected into JSON, never a traceback."""

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return error_response(err.status, err.code, err.message, err.headers)

    @app.errorhandler(Busy)
    def _busy(_err: Busy) -> Response:  # the pipeline says "full"; here, at the HTTP edge, it becomes 503
        busy = busy_error(retry_after_seconds)
        return error_response(busy.status, busy.code, busy.message, busy.headers)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        code = (err.name or "error").lower().replace(" ", "_")
        messages = {
            404: "No such endpoint.",
            405: "This endpoint does not accept that method.",
            413: "The request body is too large.",
        }
        return error_response(status, code, messages.get(status, err.description or err.name))

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        _LOGGER.exception("Unhandled error")
        return error_response(500, "internal_error", "The server hit an unexpected error; it is still running.")
