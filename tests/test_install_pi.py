"""scripts/install-pi in a scratch root, with recording stand-ins for the system commands it runs.

The stand-ins behave like the real commands on the scratch root's files (useradd adds the
passwd and group lines, usermod -aG adds a member); python3 is the real one, so the venv is real.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install-pi"

_RECORDER = """#!/bin/bash
# Recording stand-in for {name}: logs its arguments, then acts on the scratch root like the real one.
printf '%s\\n' "{name} $*" >>"$RECORD_LOG"
R="$AI_TELEPHONE_ROOT"
case "{name}" in
  useradd)
    user="${{@: -1}}"; home=/nonexistent; groups=""
    while [ $# -gt 1 ]; do
      case "$1" in --home-dir) home=$2; shift ;; --groups) groups=$2; shift ;; esac
      shift
    done
    gid=$((900 + $(wc -l <"$R/etc/group")))
    echo "$user:x:$gid:$gid::$home:/usr/sbin/nologin" >>"$R/etc/passwd"
    echo "$user:x:$gid:" >>"$R/etc/group"
    mkdir -p "$R$home"
    for g in ${{groups//,/ }}; do
      sed -i -E "s/^($g:[^:]*:[^:]*:)(.+)$/\\1\\2,$user/; s/^($g:[^:]*:[^:]*:)$/\\1$user/" "$R/etc/group"
    done
    ;;
  usermod)
    g=$3; user=$4
    sed -i -E "s/^($g:[^:]*:[^:]*:)(.+)$/\\1\\2,$user/; s/^($g:[^:]*:[^:]*:)$/\\1$user/" "$R/etc/group"
    ;;
  groupadd)
    g="${{@: -1}}"; echo "$g:x:$((800 + $(wc -l <"$R/etc/group"))):" >>"$R/etc/group"
    ;;
esac
exit 0
"""


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` (the venv excepted) with its content hash and mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and "/venv/" not in f"/{rel}":
            out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), stat.S_IMODE(path.stat().st_mode))
    return out


@pytest.fixture
def scratch(tmp_path: Path) -> dict[str, object]:
    """A fresh 'Raspberry Pi OS' root (passwd/group with audio but no gpio group) and the stand-ins."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\naudio:x:29:pi\npi:x:1000:\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = dict(os.environ, AI_TELEPHONE_ROOT=str(root), RECORD_LOG=str(tmp_path / "calls.log"))
    for name in ("apt-get", "systemctl", "useradd", "usermod", "groupadd", "pip"):
        tool = bin_dir / name
        tool.write_text(_RECORDER.format(name=name))
        tool.chmod(0o755)
    python3 = bin_dir / "python3"
    real = f"{sys.base_prefix}/bin/python3"
    python3.write_text(f'#!/bin/bash\nprintf "%s\\n" "python3 $*" >>"$RECORD_LOG"\nexec {real} "$@"\n')
    python3.chmod(0o755)
    env.update(APT_GET=str(bin_dir / "apt-get"), SYSTEMCTL=str(bin_dir / "systemctl"), USERADD=str(bin_dir / "useradd"),
               USERMOD=str(bin_dir / "usermod"), GROUPADD=str(bin_dir / "groupadd"), PIP=str(bin_dir / "pip"),
               PYTHON3=str(python3))
    up_output = tmp_path / "up.txt"
    up_output.write_text(
        "# AI Telephone server: Vast.ai instance 31000, status ok\n"
        "AI_TELEPHONE_SERVER=https://203.0.113.7:41234\n"
        "AI_TELEPHONE_API_KEY=k3y-from-up\n"
        "AI_TELEPHONE__PI__CLIENT__CA_CERT=/etc/ai-telephone/server-cert.pem\n"
        "# /etc/ai-telephone/server-cert.pem:\n"
        "-----BEGIN CERTIFICATE-----\nMIIBfakebutwellformedenoughforcopying\n-----END CERTIFICATE-----\n"
    )
    return {"root": root, "env": env, "log": tmp_path / "calls.log", "up": up_output}


def _run(scratch: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], env=scratch["env"], capture_output=True, text=True,
                          timeout=240, check=False)


def test_install_pi_twice_in_a_scratch_root_is_idempotent(scratch: dict[str, object]) -> None:
    root: Path = scratch["root"]  # type: ignore[assignment]
    first = _run(scratch, str(scratch["up"]))
    assert first.returncode == 0, first.stderr
    calls_first = scratch["log"].read_text().splitlines()  # type: ignore[attr-defined]
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

    # Run again: same files, no new user or group lines, no second venv, service restarted.
    second = _run(scratch, str(scratch["up"]))
    assert second.returncode == 0, second.stderr
    calls_second = scratch["log"].read_text().splitlines()[len(calls_first):]  # type: ignore[attr-defined]
    assert _tree(root) == tree_first
    assert (root / "etc/passwd").read_text().splitlines() == passwd
    assert (root / "etc/group").read_text().splitlines() == group
    assert venv_cfg.stat().st_ino == venv_inode
    assert not [c for c in calls_second if c.startswith(("python3 -m venv", "useradd", "usermod", "groupadd"))]
    assert "systemctl restart ai-telephone-pi.service" in calls_second


def test_rerun_without_output_keeps_settings_and_hand_edits(scratch: dict[str, object]) -> None:
    root: Path = scratch["root"]  # type: ignore[assignment]
    assert _run(scratch, str(scratch["up"])).returncode == 0
    env_file = root / "etc/ai-telephone/pi.env"
    env_file.write_text(env_file.read_text() + "AI_TELEPHONE__PI__HOOK__PIN=27\n")
    assert _run(scratch).returncode == 0
    assert "AI_TELEPHONE_API_KEY=k3y-from-up" in env_file.read_text()
    # A new `up` output replaces the managed lines and keeps the maker's own.
    new_up: Path = scratch["up"]  # type: ignore[assignment]
    new_up.write_text(new_up.read_text().replace("203.0.113.7:41234", "198.51.100.9:40001"))
    assert _run(scratch, str(new_up)).returncode == 0
    lines = env_file.read_text().splitlines()
    assert "AI_TELEPHONE_SERVER=https://198.51.100.9:40001" in lines
    assert "AI_TELEPHONE__PI__HOOK__PIN=27" in lines
    assert sum(line.startswith("AI_TELEPHONE_SERVER=") for line in lines) == 1
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_output_without_server_lines_is_refused(scratch: dict[str, object], tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("ERROR deploy.vastai.cli: no Vast.ai offer matches\n")
    result = _run(scratch, str(bad))
    assert result.returncode != 0
    assert "AI_TELEPHONE_SERVER" in result.stderr
    assert not (scratch["root"] / "etc/ai-telephone/pi.env").exists()  # type: ignore[operator]
