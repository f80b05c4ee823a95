"""The API description: ``/openapi.json`` (cloud_server/web/openapi.yaml) and ``/docs``, Swagger UI.

Both are open without the key: the description holds no secrets and says no more than the README;
trying a request from ``/docs`` needs the key, given through Swagger UI's "Authorize" (kept in the
page's memory only). Swagger UI comes from the flask-swagger-ui package (its ``dist`` folder, served
here; the package's own page has an inline script, which the Content-Security-Policy forbids), so
the viewer works offline and is updated by a pin bump.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any, Final

import yaml
from flask import Blueprint, Response, abort, jsonify, render_template, send_from_directory

from cloud_server.routes.request import page_headers

bp = Blueprint("docs", __name__)
SWAGGER_ASSETS: Final = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
"""The files of flask-swagger-ui's dist the page uses; nothing else of the package is served."""
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@functools.cache
def api_description() -> dict[str, Any]:
    """The OpenAPI document, read once from the package."""
    text = resources.files("cloud_server").joinpath("web/openapi.yaml").read_text(encoding="utf-8")
    description: dict[str, Any] = yaml.safe_load(text)
    return description


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The API described as OpenAPI 3.1."""
    return jsonify(api_description())


@bp.get("/docs")
def docs_page() -> str:
    """The description shown in Swagger UI."""
    return render_template("docs.html")


@bp.get("/docs/swagger/<name>")
def swagger_asset(name: str) -> Response:
    """One of Swagger UI's files, from the flask-swagger-ui package."""
    if name not in SWAGGER_ASSETS:
        abort(404)
    dist = resources.files("flask_swagger_ui").joinpath("dist")
    return send_from_directory(str(dist), name, max_age=86400)


@bp.after_request
def _page_headers(response: Response) -> Response:
    return page_headers(response, _CSP)
