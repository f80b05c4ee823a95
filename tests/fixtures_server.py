"""Fixtures for the server tests: the real app served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from cloud_server.tts.base import TTSEngine
from common.config import Config, config_from_dict

TEST_KEY = "test-key-0123456789abcdef"


@dataclass
class RunningServer:
    """An app listening on 127.0.0.1 in a thread of the test process."""

    url: str
    app: Flask
    http: BaseWSGIServer
    thread: threading.Thread

    @property
    def services(self) -> Any:
        return self.app.extensions["ai_telephone"]

    def health(self) -> dict[str, Any]:
        """GET /health with the key: the details (slots, voice status), as an operator sees them."""
        reply = requests.get(self.url + "/health", headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]

    def slots_in_use(self) -> int:
        """Reply slots held now, read through /health (not the server's internals)."""
        return int(self.health()["queue"]["active"])

    def wait_slots_free(self, timeout: float = 15.0) -> None:
        """Wait (bounded) until /health says no reply slot is held; AssertionError naming what is held."""
        deadline = time.monotonic() + timeout
        while self.slots_in_use() and time.monotonic() < deadline:
            time.sleep(0.1)
        held = self.health()["queue"]
        assert held["active"] == 0, f"reply slots still held after {timeout} s: {held}"

    def stop(self) -> None:
        self.http.shutdown()
        self.thread.join(timeout=10)
        self.http.server_close()


def serve_app(app: Flask) -> RunningServer:
    """Serve ``app`` threaded on a free port until ``stop()``."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, name="test-http", daemon=True)
    thread.start()
    return RunningServer(url=f"http://127.0.0.1:{http.server_port}", app=app, http=http, thread=thread)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Nested dict merge, ``extra`` winning."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def server_config(ollama_url: str, tmp_path: Any, **server: Any) -> Config:
    """A server config for tests: Ollama at ``ollama_url``, the Piper voice, small limits."""
    base: dict[str, Any] = {
        "server": {
            "llm": {"backend": "ollama", "ollama_host": ollama_url, "model": "llama3.2:3b", "timeout_seconds": 5.0,
                    "warm_up": False},
            "tts": {"engine": "piper"},
            "data_dir": str(tmp_path / "data"),
        }
    }
    return config_from_dict(deep_merge(base, {"server": server}))


@pytest.fixture(scope="session")
def piper_engines() -> tuple[TTSEngine, TTSEngine]:
    """The real Piper voice as primary, and the fallback chain Chatterbox gets (Piper, then espeak-ng), loaded once."""
    from cloud_server.tts.chain import FallbackChain
    from cloud_server.tts.engines import descriptor
    from cloud_server.tts.select import build_engines
    from common.config import TTSConfig

    cfg = TTSConfig(engine="piper")
    primary, _ = build_engines(cfg)
    return primary, FallbackChain([primary, descriptor("espeak").load(cfg, primary.sample_rate)])


@pytest.fixture
def start_server(
    tmp_path: Any, piper_engines: tuple[TTSEngine, TTSEngine]
) -> Iterator[Callable[..., RunningServer]]:
    """Start the real app over HTTP: ``start_server(config, engines=None, env=None)``."""
    from cloud_server import create_app

    running: list[RunningServer] = []

    def start(
        config: Config, engines: tuple[TTSEngine, TTSEngine] | None = None, env: dict[str, str] | None = None
    ) -> RunningServer:
        app = create_app(config, env={"AI_TELEPHONE_API_KEY": TEST_KEY} if env is None else env,
                         engines=engines or piper_engines)
        server = serve_app(app)
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()
