"""Local deploy state under ~/.config/ai-telephone/vast/<label>/: the server API key and TLS files.

Secrets are written with mode 0600 from the start (never world-readable, not even briefly)
and are never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.atomic import atomic_write
from deploy.vastai.tls import ServerCert

_LOGGER = logging.getLogger(__name__)
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STATE_DIR_ENV = "AI_TELEPHONE_DEPLOY_DIR"


class StoreError(RuntimeError):
    """The local deploy state is missing or unreadable; the message says which file."""


def default_root(env: Mapping[str, str]) -> Path:
    """$AI_TELEPHONE_DEPLOY_DIR, else $XDG_CONFIG_HOME/ai-telephone/vast, else ~/.config/ai-telephone/vast."""
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path(env.get("HOME", "~")) / ".config"
    return base.expanduser() / "ai-telephone" / "vast"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, data, mode=0o600)


class DeployStore:
    """The files one deployment (one label) keeps on this machine."""

    def __init__(self, root: Path, label: str, key_label: str | None = None) -> None:
        """``key_label``: whose API key this deployment uses (a replica shares its group's: the phone has one)."""
        for name in (label, key_label or label):
            if not _SAFE_LABEL.match(name):
                raise StoreError(f"label {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        self.dir = root / label
        self._key_dir = root / (key_label or label)

    @property
    def api_key_path(self) -> Path:
        return self._key_dir / "api-key"

    @property
    def bundle_path(self) -> Path:
        """A group's certificates in one PEM file: what the phone trusts when it knows several servers."""
        return self.dir / "server-certs.pem"

    @property
    def cert_path(self) -> Path:
        return self.dir / "server-cert.pem"

    @property
    def key_path(self) -> Path:
        return self.dir / "server-key.pem"

    @property
    def instance_path(self) -> Path:
        return self.dir / "instance.json"

    def api_key(self) -> str:
        """The server API key, generated (and stored 0600) the first time."""
        if self.api_key_path.is_file():
            key = self.api_key_path.read_text(encoding="utf-8").strip()
            if key:
                return key
        key = secrets.token_urlsafe(32)
        _write_private(self.api_key_path, key.encode("ascii") + b"\n")
        _LOGGER.info("Generated a new server API key in %s", self.api_key_path)
        return key

    def save_cert(self, cert: ServerCert) -> None:
        """Keep the certificate (what the Pi pins) and its private key (0600)."""
        _write_private(self.key_path, cert.key_pem)
        _write_private(self.cert_path, cert.cert_pem)
        os.chmod(self.cert_path, 0o644)

    def save_bundle(self, cert_pems: list[bytes]) -> None:
        """Keep the group's certificates, one after the other, as the phone's CA file."""
        _write_private(self.bundle_path, b"".join(cert_pems))
        os.chmod(self.bundle_path, 0o644)

    def load_cert(self) -> ServerCert:
        """The stored certificate and key; StoreError when this machine has none."""
        try:
            return ServerCert(self.cert_path.read_bytes(), self.key_path.read_bytes())
        except OSError as err:
            raise StoreError(f"{err.filename}: {err.strerror}") from err

    def save_instance(self, info: Mapping[str, Any]) -> None:
        """Remember which instance the stored certificate belongs to."""
        _write_private(self.instance_path, json.dumps(dict(info), indent=1).encode("utf-8"))

    def load_instance(self) -> dict[str, Any] | None:
        """What :meth:`save_instance` wrote, or None."""
        try:
            data = json.loads(self.instance_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def forget_instance(self) -> None:
        """Drop the instance record and its certificate (the API key stays for the next `up`)."""
        for path in (self.instance_path, self.cert_path, self.key_path):
            path.unlink(missing_ok=True)
