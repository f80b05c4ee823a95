"""`systemd-analyze verify` on the units, rendered with paths that exist here."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted((REPO / "systemd").glob("*.service"))


def _parse(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(path)
    return cp


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_verifies_clean(unit: Path, tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze")
    # The units name /opt/ai-telephone/...: point them at a scratch tree holding those executables.
    app = tmp_path / "opt/ai-telephone"
    (app / "venv/bin").mkdir(parents=True)
    (app / "scripts").mkdir()
    for exe in ("venv/bin/gunicorn", "venv/bin/python", "scripts/serve"):
        (app / exe).write_text("#!/bin/sh\n")
        (app / exe).chmod(0o755)
    rendered = tmp_path / unit.name
    rendered.write_text(unit.read_text().replace("/opt/ai-telephone", str(app)))
    result = subprocess.run(["systemd-analyze", "verify", str(rendered)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_server_unit_runs_scripts_serve_after_network_and_ollama() -> None:
    cp = _parse(REPO / "systemd/ai-telephone-server.service")
    assert set(cp["Unit"]["After"].split()) >= {"network-online.target", "ollama.service"}
    assert set(cp["Unit"]["Wants"].split()) >= {"network-online.target", "ollama.service"}
    svc = cp["Service"]
    # HAProxy in front of gunicorn, exactly as the onstart runs it without systemd.
    assert svc["ExecStart"] == "/opt/ai-telephone/scripts/serve" and (REPO / "scripts/serve").is_file()
    assert svc["KillMode"] == "mixed" and int(svc["LimitNOFILE"]) >= 2 * 4096 + 100
    assert svc["Restart"] == "always" and float(svc["RestartSec"]) > 0
    assert svc["User"] not in ("", "root") and svc["WorkingDirectory"] == "/opt/ai-telephone"
    assert svc["EnvironmentFile"] == "/etc/ai-telephone/server.env"
    # The unit and the onstart agree on where things live.
    onstart = (REPO / "deploy/vastai/onstart.sh").read_text()
    assert f"SVC_USER=${{AI_TELEPHONE_ONSTART_USER:-{svc['User']}}}" in onstart
    assert "ETC=$R/etc/ai-telephone" in onstart and "APP_DIR=$R/opt/ai-telephone" in onstart
    assert "DATA=$R/var/lib/ai-telephone" in onstart and svc["ReadWritePaths"] == "/var/lib/ai-telephone"
    assert "$ETC/server.env" in onstart


def test_pi_unit_matches_what_install_pi_writes() -> None:
    unit = REPO / "systemd/ai-telephone-pi.service"
    assert unit.is_file(), "systemd/ai-telephone-pi.service (from the pi-call branch) is needed by scripts/install-pi"
    svc = _parse(unit)["Service"]
    install = (REPO / "scripts/install-pi").read_text()
    assert svc["EnvironmentFile"].lstrip("-") == "/etc/ai-telephone/pi.env" and "ETC=/etc/ai-telephone" in install
    assert svc["User"] == "telephone" and "SVC_USER=telephone" in install
    assert svc["ExecStart"].startswith("/opt/ai-telephone/venv/bin/") and "APP=/opt/ai-telephone" in install


def test_wyoming_unit_runs_the_bridge_with_secrets_from_its_env_file() -> None:
    cp = _parse(REPO / "systemd/ai-telephone-wyoming.service")
    assert set(cp["Unit"]["After"].split()) >= {"network-online.target"}
    svc = cp["Service"]
    assert svc["ExecStart"].startswith("/opt/ai-telephone/venv/bin/python -m cloud_server.wyoming --uri tcp://")
    assert svc["EnvironmentFile"] == "/etc/ai-telephone/wyoming.env"
    assert svc["User"] not in ("", "root") and svc["Restart"] == "always"
    assert "API_KEY" not in svc.get("Environment", "")
