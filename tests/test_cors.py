"""CORS over real HTTP: only the origins in ``server.cors_origins`` get the headers, never with credentials."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from flask import Flask

from cloud_server.cors import allow_configured_origins
from common.config import ConfigError
from tests.fixtures_server import TEST_KEY, RunningServer, server_config
from tests.ollama_standin import OllamaStandIn

TIMEOUT = 30
LISTED = "https://phone.example.com"
OTHER = "https://evil.example.net"


def preflight(url: str, origin: str) -> requests.Response:
    """What a browser sends before a cross-origin POST of JSON with the key."""
    return requests.options(url + "/process-text", timeout=TIMEOUT, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })


def characters(url: str, origin: str, key: str | None = TEST_KEY) -> requests.Response:
    headers = {"Origin": origin} | ({"X-API-Key": key} if key else {})
    return requests.get(url + "/characters", headers=headers, timeout=TIMEOUT)


def test_a_listed_origin_may_call_the_api_with_the_key_but_never_with_the_cookie(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path, cors_origins=[LISTED, "http://localhost:5173"]))
    answer = preflight(server.url, LISTED)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == LISTED
    allowed_headers = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed_headers
    assert {"POST", "PUT", "DELETE"} <= {m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")}
    assert "Access-Control-Allow-Credentials" not in answer.headers  # the console's cookie stays same-origin
    listing = characters(server.url, LISTED)
    assert listing.status_code == 200 and listing.headers["Access-Control-Allow-Origin"] == LISTED
    assert "Access-Control-Allow-Credentials" not in listing.headers
    refused = characters(server.url, LISTED, key=None)  # the page can read why: the key is missing
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == LISTED
    key_preflight = requests.options(server.url + "/characters", timeout=TIMEOUT, headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-api-key",
    })
    assert key_preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "x-api-key" in key_preflight.headers["Access-Control-Allow-Headers"].lower()

    for answer in (preflight(server.url, OTHER), characters(server.url, OTHER)):
        assert not any(h.lower().startswith("access-control-") for h in answer.headers), answer.headers
    assert characters(server.url, OTHER).status_code == 200  # CORS is the browser's rule; the key still decides


def test_no_origin_is_allowed_by_default(
    start_server: Callable[..., RunningServer], ollama: OllamaStandIn, tmp_path
) -> None:
    server = start_server(server_config(ollama.url, tmp_path))
    for answer in (preflight(server.url, LISTED), characters(server.url, LISTED)):
        assert not any(h.lower().startswith("access-control-") for h in answer.headers), answer.headers


@pytest.mark.parametrize("origin", ["*", "https://*.example.com", "https://phone.example.com/", "phone.example.com"])
def test_a_wildcard_or_a_url_is_not_an_origin(origin: str) -> None:
    with pytest.raises(ConfigError, match=r"server.cors_origins\[1\]"):
        allow_configured_origins(Flask(__name__), [LISTED, origin])
