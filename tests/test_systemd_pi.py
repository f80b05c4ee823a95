"""The Pi client's systemd unit: what it promises, and systemd's own verifier finds nothing to say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "ai-telephone-pi.service"
INSTALL_DIR = "/opt/ai-telephone"


def settings(text: str) -> dict[str, list[str]]:
    """Every key's values (a key may repeat, like Environment=)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_runs_as_a_dedicated_user_and_restarts() -> None:
    unit = settings(UNIT.read_text())
    assert unit["User"] == ["telephone"]
    assert set(unit["SupplementaryGroups"][0].split()) >= {"audio", "gpio"}
    assert "network-online.target" in unit["After"][0].split()
    assert "network-online.target" in unit["Wants"][0].split()
    assert unit["Restart"][0] in ("always", "on-failure")
    assert float(unit["RestartSec"][0]) > 0
    assert unit["WorkingDirectory"] == [INSTALL_DIR]
    assert unit["EnvironmentFile"] == ["/etc/ai-telephone/pi.env"]
    assert unit["ExecStart"] == [f"{INSTALL_DIR}/venv/bin/python -m pi_client"]
    # The key comes from the environment file only, never from the unit itself.
    assert not any("API_KEY" in value for value in unit.get("Environment", []))


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    # The checked-in unit points at the Pi's install; render a copy at this checkout and venv,
    # so verify can check that the command exists and is executable.
    text = UNIT.read_text().replace(f"{INSTALL_DIR}/venv/bin/python", sys.executable)
    text = text.replace(INSTALL_DIR, str(ROOT))
    rendered = tmp_path / UNIT.name
    rendered.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # verify exits 0 on many problems (an unknown Restart= value, a typo in a key): it must say nothing.
    assert (proc.stdout + proc.stderr).strip() == ""
