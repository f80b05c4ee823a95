"""scripts/install-pi in a scratch root, with recording stand-ins for the system commands it runs.

The stand-ins behave like the real commands on the scratch root's files (useradd adds the
passwd and group lines, usermod -aG adds a member); python3 is the real one, so the venv is real.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from tests.fixtures_deploy import PiScratch

REPO = Path(__file__).resolve().parents[1]
UP_OUTPUT = (
    "# AI Telephone server: Vast.ai instance 31000, status ok\n"
    "AI_TELEPHONE_SERVER=https://203.0.113.7:41234\n"
    "AI_TELEPHONE_API_KEY=k3y-from-up\n"
    "AI_TELEPHONE__PI__CLIENT__CA_CERT=/etc/ai-telephone/server-cert.pem\n"
    "# /etc/ai-telephone/server-cert.pem:\n"
    "-----BEGIN CERTIFICATE-----\nMIIBfakebutwellformedenoughforcopying\n-----END CERTIFICATE-----\n"
)


@pytest.fixture
def up_file(tmp_path: Path) -> Path:
    """What `python -m deploy.vastai up` printed, saved to a file as the README says."""
    path = tmp_path / "up.txt"
    path.write_text(UP_OUTPUT)
    return path


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` (the venv excepted) with its content hash and mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and "/venv/" not in f"/{rel}":
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(path.stat().st_mode))
    return out


def test_install_pi_twice_in_a_scratch_root_is_idempotent(pi_scratch: PiScratch, up_file: Path) -> None:
    root = pi_scratch.root
    first = pi_scratch.run(str(up_file))
    assert first.returncode == 0, first.stderr
    calls_first = pi_scratch.calls()
    tree_first = _tree(root)
    venv_cfg = root / "opt/ai-telephone/venv/pyvenv.cfg"
    venv_inode = venv_cfg.stat().st_ino

    # What a fresh install leaves behind.
    env_file = root / "etc/ai-telephone/pi.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text().splitlines()[1:] == [
        "AI_TELEPHONE_SERVER=https://203.0.113.7:41234",
        "AI_TELEPHONE_API_KEY=k3y-from-up",
        "AI_TELEPHONE__PI__CLIENT__CA_CERT=/etc/ai-telephone/server-cert.pem",
    ]
    assert (root / "etc/ai-telephone/server-cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert (root / "etc/systemd/system/ai-telephone-pi.service").read_bytes() == (
        REPO / "systemd/ai-telephone-pi.service"
    ).read_bytes()
    assert (root / "opt/ai-telephone/pi_client").is_dir() and (root / "opt/ai-telephone/common/config.py").is_file()
    assert "include-system-site-packages = true" in venv_cfg.read_text()  # python3-lgpio from apt
    passwd = (root / "etc/passwd").read_text().splitlines()
    group = (root / "etc/group").read_text().splitlines()
    assert [line for line in passwd if line.startswith("telephone:")][0].split(":")[5] == "/var/lib/ai-telephone"
    assert any(line.startswith("audio:") and "telephone" in line.split(":")[3].split(",") for line in group)
    assert any(line.startswith("gpio:") and "telephone" in line.split(":")[3].split(",") for line in group)
    apt = [c for c in calls_first if c.startswith("apt-get install")]
    assert apt and all(p in apt[0].split() for p in ("libportaudio2", "alsa-utils", "espeak-ng", "python3-venv",
                                                      "python3-lgpio"))
    assert "systemctl enable ai-telephone-pi.service" in calls_first
    assert any(c.startswith("pip install") and "requirements-pi.txt" in c for c in calls_first)
    no_deps = [c for c in calls_first if c.startswith("pip install") and "requirements-pi-nodeps.txt" in c]
    assert no_deps and "--no-deps" in no_deps[0].split()  # Smart Turn's model without pipecat's dependencies

    # Run again: same files, no new user or group lines, no second venv, service restarted.
    second = pi_scratch.run(str(up_file))
    assert second.returncode == 0, second.stderr
    calls_second = pi_scratch.calls()[len(calls_first):]
    assert _tree(root) == tree_first
    assert (root / "etc/passwd").read_text().splitlines() == passwd
    assert (root / "etc/group").read_text().splitlines() == group
    assert venv_cfg.stat().st_ino == venv_inode
    assert not [c for c in calls_second if c.startswith(("python3 -m venv", "useradd", "usermod", "groupadd"))]
    assert "systemctl restart ai-telephone-pi.service" in calls_second


def test_rerun_without_output_keeps_settings_and_hand_edits(pi_scratch: PiScratch, up_file: Path) -> None:
    root = pi_scratch.root
    assert pi_scratch.run(str(up_file)).returncode == 0
    env_file = root / "etc/ai-telephone/pi.env"
    env_file.write_text(env_file.read_text() + "AI_TELEPHONE__PI__HOOK__PIN=27\n")
    assert pi_scratch.run().returncode == 0
    assert "AI_TELEPHONE_API_KEY=k3y-from-up" in env_file.read_text()
    # A new `up` output replaces the managed lines and keeps the maker's own.
    up_file.write_text(UP_OUTPUT.replace("203.0.113.7:41234", "198.51.100.9:40001"))
    assert pi_scratch.run(str(up_file)).returncode == 0
    lines = env_file.read_text().splitlines()
    assert "AI_TELEPHONE_SERVER=https://198.51.100.9:40001" in lines
    assert "AI_TELEPHONE__PI__HOOK__PIN=27" in lines
    assert sum(line.startswith("AI_TELEPHONE_SERVER=") for line in lines) == 1
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_output_without_server_lines_is_refused(pi_scratch: PiScratch, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("ERROR deploy.vastai.cli: no Vast.ai offer matches\n")
    result = pi_scratch.run(str(bad))
    assert result.returncode != 0
    assert "AI_TELEPHONE_SERVER" in result.stderr
    assert not (pi_scratch.root / "etc/ai-telephone/pi.env").exists()
    assert pi_scratch.calls() == []  # refused before touching the system
