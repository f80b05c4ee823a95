"""/openapi.json and /docs: the description matches the app's routes, and Swagger UI shows it offline."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import pytest
import requests
from openapi_spec_validator import validate

from cloud_server.routes.docs import api_description
from tests.fixtures_browser import needs_chromium, wait_for
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn

TIMEOUT = 30
NOT_API: Final = re.compile(r"static|console\..*|docs\.swagger_asset")
"""Endpoints that are files or console pages, not the API."""
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture
def server(start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path: Any) -> RunningServer:
    return start_server(server_config(ollama.url, tmp_path))


def app_routes(server: RunningServer) -> dict[str, set[str]]:
    """The app's API routes as OpenAPI paths (``/voices/{voice_id}``) → their methods."""
    routes: dict[str, set[str]] = {}
    for rule in server.app.url_map.iter_rules():
        if NOT_API.fullmatch(rule.endpoint):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods or () if m.lower() in HTTP_METHODS)
    return routes


def described_routes() -> dict[str, set[str]]:
    return {path: set(item) & HTTP_METHODS for path, item in api_description()["paths"].items()}


def test_the_description_is_valid_openapi_and_names_exactly_the_apps_routes(server: RunningServer) -> None:
    validate(api_description())
    assert described_routes() == app_routes(server)
    assert len(described_routes()) > 20


def test_the_description_and_its_viewer_need_no_key_and_are_served_offline(server: RunningServer) -> None:
    served = requests.get(server.url + "/openapi.json", timeout=TIMEOUT)
    assert served.status_code == 200 and served.json() == api_description()
    assert TEST_KEY not in served.text
    page = requests.get(server.url + "/docs", timeout=TIMEOUT)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and all(a.startswith("/") for a in assets)
    for asset in assets:
        assert requests.get(server.url + asset, timeout=TIMEOUT).status_code == 200, asset
    assert requests.get(server.url + "/docs/swagger/oauth2-redirect.html", timeout=TIMEOUT).status_code == 404


@needs_chromium
def test_swagger_ui_shows_every_operation_in_a_real_browser_under_the_pages_csp(
    server: RunningServer, browser: Any
) -> None:
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation', e => window.cspViolations.push("
        "e.violatedDirective + ' ' + e.blockedURI));"
    )})
    browser.get(server.url + "/docs")
    operations = sum(len(methods) for methods in described_routes().values())
    shown = wait_for(
        browser, f"document.querySelectorAll('.opblock').length >= {operations} && "
        "document.querySelectorAll('.opblock').length", "Swagger UI to list the operations",
    )
    assert shown == operations
    assert "AI Telephone voice server" in browser.find_element("css selector", ".info .title").text
    assert browser.execute_script("return window.cspViolations;") == []

