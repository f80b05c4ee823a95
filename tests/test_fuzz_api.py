"""Property-based fuzzing of the HTTP API: thousands of generated requests against the real server.

Hypothesis builds requests (methods, routes, auth headers, content types, bodies of arbitrary JSON,
wrong types, huge and odd Unicode strings, invalid UTF-8, bad session ids) and sends them over real
HTTP on 127.0.0.1 to the app with the real Piper voice and the Ollama stand-in answering a short
reply. Properties: never a 5xx; every error is JSON with a code and a message a person can read;
a 200 from /process-text is a WAV stream with speech in it; the key never comes back; and at the
end the server is healthy, answers a turn, and holds no reply slot.
"""

from __future__ import annotations

import json
import logging
import string
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_server.tts.base import TTSEngine
from common.wav import WavStreamReader
from tests.fixtures_server import TEST_KEY, RunningServer, serve_app, server_config
from tests.ollama_standin import OllamaStandIn

_LOGGER = logging.getLogger(__name__)
TIMEOUT = 30
EXAMPLES = 2000
"""Generated requests per run (~15-50 s here, by machine load): a valid turn costs a Piper sentence, an error ~5 ms."""
STATS: Counter[str] = Counter()

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
ROUTES = ["/process-text", "/health", "/sessions/"]
LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
odd_strings = st.one_of(
    st.text(max_size=80),  # any Unicode, lone surrogates included
    st.text(alphabet=string.whitespace, max_size=20),
    st.sampled_from(["", " ", "\x00", "\u202e", "💥" * 50, "a\u0000b", "../../etc/passwd", "%00", "\ud800"]),
    st.integers(1, 3).map(lambda n: "x" * (2001 * n)),  # over max_text_chars
    st.just("y" * 70000),  # over max_body_bytes
)
field_values = st.one_of(odd_strings, json_values)
turn_bodies = st.fixed_dictionaries(
    {},
    optional={"text": field_values, "prompt": field_values, "session_id": field_values, "character": field_values},
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.none(),
    st.integers(1, 32000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting (json.loads recurses)
    turn_bodies.map(_json_bytes),
    turn_bodies.map(_json_bytes),
    json_values.map(_json_bytes),
    st.binary(max_size=300),  # not JSON, or not UTF-8
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
auth_headers = st.one_of(
    st.just({}),
    st.just({"Authorization": f"Bearer {TEST_KEY}"}),
    st.just({"X-API-Key": TEST_KEY}),
    LATIN1.map(lambda v: {"Authorization": "Bearer " + v}),
    LATIN1.map(lambda v: {"X-API-Key": v}),
    LATIN1.map(lambda v: {"Authorization": v}),
    st.just({"Authorization": f"Basic {TEST_KEY}"}),
    st.just({"Authorization": f"bearer  {TEST_KEY} "}),
)
content_types = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                     "application/json; charset=latin-1", "audio/wav"]),
    LATIN1,
)
session_paths = st.one_of(
    st.text(max_size=80).map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
    st.from_regex(r"[A-Za-z0-9_.:-]{1,70}", fullmatch=True),
)
paths = st.one_of(
    st.sampled_from(ROUTES[:2]),
    session_paths.map(lambda s: "/sessions/" + s),
    st.text(string.ascii_letters + "/._-%", max_size=30).map(lambda s: "/" + s),
)


@st.composite
def fuzzed_request(draw: st.DrawFn) -> dict[str, Any]:
    """A mix: valid turns, keyed turns with broken bodies, keyed session look-ups, and anything at all."""
    kind = draw(st.integers(0, 11))
    key = {"Authorization": f"Bearer {TEST_KEY}"}
    if kind == 0:  # a valid turn (each is spoken by Piper, so they are kept to about one in twelve)
        text = draw(st.text(min_size=1, max_size=60).filter(lambda t: t.strip() and "\x00" not in t))
        body: dict[str, Any] = {"text": text}
        if draw(st.booleans()):
            body["session_id"] = draw(st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True))
        return {"method": "POST", "path": "/process-text", "headers": key, "data": _json_bytes(body), "valid": True}
    if kind <= 5:  # the key is right, the body is not (or only by accident)
        headers = dict(draw(st.sampled_from([key, {"X-API-Key": TEST_KEY}])))
        content_type = draw(content_types)
        if content_type is not None:
            headers["Content-Type"] = content_type
        return {"method": "POST", "path": "/process-text", "headers": headers, "data": draw(bodies), "valid": False}
    if kind <= 7:  # the key is right, the session id is anything
        return {"method": draw(st.sampled_from(["GET", "HEAD"])), "path": "/sessions/" + draw(session_paths),
                "headers": key, "data": None, "valid": False}
    headers = dict(draw(auth_headers))
    content_type = draw(content_types)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return {"method": draw(st.sampled_from(METHODS)), "path": draw(paths), "headers": headers,
            "data": draw(bodies), "valid": False}


@pytest.fixture(scope="module")
def fuzz_server(
    tmp_path_factory: pytest.TempPathFactory, piper_engines: tuple[TTSEngine, TTSEngine]
) -> Iterator[RunningServer]:
    """One real server for the whole module (hypothesis reuses it across examples)."""
    from cloud_server import create_app

    with OllamaStandIn() as standin:
        standin.script("Okay.")
        config = server_config(standin.url, tmp_path_factory.mktemp("fuzz"))
        server = serve_app(create_app(config, env={"AI_TELEPHONE_API_KEY": TEST_KEY}, engines=piper_engines))
        try:
            yield server
        finally:
            server.stop()


def _send(server: RunningServer, req: dict[str, Any]) -> None:
    STATS["requests"] += 1
    try:
        reply = requests.request(req["method"], server.url + req["path"], headers=req["headers"], data=req["data"],
                                 timeout=TIMEOUT, stream=True)
    except requests.exceptions.InvalidHeader:
        STATS["refused_by_client_library"] += 1  # requests will not send this header at all: nothing to test
        return
    with reply:
        body = b"".join(reply.iter_content(chunk_size=None))
    STATS[f"status_{reply.status_code}"] += 1
    where = f"{req['method']} {req['path']} -> {reply.status_code}: {body[:300]!r}"
    assert reply.status_code < 500, where
    assert TEST_KEY.encode() not in body, where
    if req["method"] == "HEAD":
        return
    if reply.status_code >= 400:
        assert reply.headers["Content-Type"].startswith("application/json"), where
        error = json.loads(body)["error"]
        assert isinstance(error["code"], str) and error["code"], where
        assert isinstance(error["message"], str) and len(error["message"]) >= 10, where
    if req["valid"]:
        assert reply.status_code == 200, where
    if reply.status_code == 200 and req["path"] == "/process-text" and req["method"] == "POST":
        assert reply.headers["Content-Type"] == "audio/wav", where
        reader = WavStreamReader()
        pcm = reader.feed(body)
        assert reader.format is not None and len(pcm) > 2000, where  # "Okay." is ~0.4 s of speech
        STATS["spoken_turns"] += 1


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(req=fuzzed_request())
def test_no_request_gets_a_5xx_and_every_error_is_clear_json(fuzz_server: RunningServer, req: dict[str, Any]) -> None:
    STATS["cases"] += 1
    _send(fuzz_server, req)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 30000 + b"]" * 30000,
        b'{"text": ' + b"[" * 20000 + b"]" * 20000 + b"}",
        b'{"a":' * 10000 + b"1" + b"}" * 10000,
    ],
)
def test_deeply_nested_json_is_a_clear_400_not_a_crash(fuzz_server: RunningServer, body: bytes) -> None:
    # json.loads raises RecursionError on deep nesting, which is not a ValueError: this was a 500.
    reply = requests.post(fuzz_server.url + "/process-text", data=body, timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"})
    assert reply.status_code == 400, reply.text[:300]
    assert reply.json()["error"]["code"] == "bad_json"


def test_after_the_fuzzing_the_server_is_healthy_and_holds_no_slot(fuzz_server: RunningServer, tmp_path: Path) -> None:
    health = requests.get(fuzz_server.url + "/health", timeout=TIMEOUT)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    with requests.post(fuzz_server.url + "/process-text", json={"text": "Still there?"}, stream=True,
                       headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=TIMEOUT) as reply:
        assert reply.status_code == 200
        reader = WavStreamReader()
        pcm = b"".join(reader.feed(chunk) for chunk in reply.iter_content(chunk_size=None))
    assert len(pcm) > 2000
    deadline = time.monotonic() + 10
    while fuzz_server.services.slots.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fuzz_server.services.slots.active == 0, "a reply slot leaked: the server would refuse callers"
    _LOGGER.warning("fuzz totals: %s", dict(sorted(STATS.items())))
