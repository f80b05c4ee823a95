"""The locally made certificate: the Pi's ordinary TLS check trusts exactly it; secrets stay 0600."""

from __future__ import annotations

import json
import ssl
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.vastai import tls
from deploy.vastai.health import probe, server_url
from deploy.vastai.store import DeployStore, StoreError, default_root


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        data = json.dumps({"status": "ok", "llm": {"reachable": True}, "tts": {"engine": "piper"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 presenting a certificate made by tls.generate; yields (url, cert path)."""
    cert = tls.generate("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.cert_pem)
    key_path.write_bytes(cert.key_pem)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server_url("127.0.0.1", server.server_address[1]), cert_path
    finally:
        server.shutdown()
        server.server_close()


def test_certificate_names_the_ip_and_has_a_fingerprint() -> None:
    cert = tls.generate("203.0.113.9")
    assert tls.ip_addresses(cert.cert_pem) == ["203.0.113.9"]
    fp = tls.fingerprint(cert.cert_pem)
    assert len(fp.split(":")) == 32 and fp == fp.upper()
    assert b"PRIVATE KEY" in cert.key_pem and b"PRIVATE KEY" not in cert.cert_pem
    assert tls.fingerprint(tls.generate("203.0.113.9").cert_pem) != fp  # a fresh key every time


def test_pinned_certificate_is_trusted_and_nothing_else(https_server: tuple[str, Path], tmp_path: Path) -> None:
    url, cert_path = https_server
    health = probe(url, cert_path)
    assert health.ready(False) and health.summary == "status ok, llm reachable True, tts piper"
    # Another certificate for the same address (what a man in the middle would present) is refused.
    other = tmp_path / "other.pem"
    other.write_bytes(tls.generate("127.0.0.1").cert_pem)
    refused = probe(url, other)
    assert refused.state == "down" and "TLS verification" in refused.summary


def test_certificate_for_another_address_is_refused(tmp_path: Path) -> None:
    """The Pi checks the address too: a cert made for the offer's IP does not pass on another IP."""
    cert = tls.generate("198.51.100.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.cert_pem)
    key_path.write_bytes(cert.key_pem)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        refused = probe(server_url("127.0.0.1", server.server_address[1]), cert_path)
    finally:
        server.shutdown()
        server.server_close()
    assert refused.state == "down" and "TLS verification" in refused.summary


def test_store_keeps_secrets_private_and_the_key_stable(tmp_path: Path) -> None:
    store = DeployStore(default_root({"XDG_CONFIG_HOME": str(tmp_path / "cfg")}), "ai-telephone")
    assert store.dir == tmp_path / "cfg/ai-telephone/vast/ai-telephone"
    key = store.api_key()
    assert len(key) >= 40 and store.api_key() == key
    assert stat.S_IMODE(store.api_key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    store.save_cert(tls.generate("127.0.0.1"))
    assert stat.S_IMODE(store.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.cert_path.stat().st_mode) == 0o644
    store.save_instance({"id": 5})
    assert store.load_instance() == {"id": 5}
    store.forget_instance()
    assert store.load_instance() is None and not store.key_path.exists() and store.api_key() == key
    with pytest.raises(StoreError, match="label"):
        DeployStore(tmp_path, "../etc")
