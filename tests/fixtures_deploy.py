"""Fixtures for the deploy tests: an isolated HOME for the CLI and a runner for `python -m deploy.vastai`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server_rig import free_port

REPO = Path(__file__).resolve().parents[1]
VAST_KEY = "vast-test-key-0123456789"

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def deploy_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the CLI: its own HOME and XDG dirs (the vastai SDK reads its key file there)."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "AI_TELEPHONE", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               VAST_API_KEY=VAST_KEY, PYTHONPATH=str(REPO))
    return env


@pytest.fixture
def run_cli(deploy_env: dict[str, str]) -> RunCli:
    """Run `python -m deploy.vastai --url URL ARGS...`; returns the finished process (stdout, stderr)."""

    def run(url: str, *args: str, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "deploy.vastai", "--url", url, *args], cwd=REPO,
                              env=env or deploy_env, input=stdin, capture_output=True, text=True, timeout=timeout)

    return run


FAST = ("--repo-url", "https://example.invalid/ai-telephone.git", "--poll", "0.05", "--start-timeout", "3",
        "--health-timeout", "2")
"""`up` flags for tests: quick polls and short timeouts."""

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


@dataclass
class PiScratch:
    """A fresh 'Raspberry Pi OS' root for scripts/install-pi, with recording stand-ins for system commands."""

    root: Path
    env: dict[str, str]
    log: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run scripts/install-pi ARGS in this root."""
        return subprocess.run(["bash", str(REPO / "scripts/install-pi"), *args], env=self.env, capture_output=True,
                              text=True, timeout=240, check=False)

    def calls(self) -> list[str]:
        """Every system command the installer ran, in order."""
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def pi_scratch(tmp_path: Path) -> PiScratch:
    """passwd/group as on a fresh Pi OS (an audio group, no gpio group yet); python3 is the real one."""
    root = tmp_path / "pi-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\naudio:x:29:pi\npi:x:1000:\n")
    bin_dir = tmp_path / "pi-bin"
    bin_dir.mkdir()
    log = tmp_path / "pi-calls.log"
    env = dict(os.environ, AI_TELEPHONE_ROOT=str(root), RECORD_LOG=str(log))
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
    return PiScratch(root, env, log)


_OLLAMA_CLI = """#!/bin/bash
# Stand-in for the ollama CLI: `serve` runs the Ollama protocol stand-in; the model is already there.
printf '%s\\n' "ollama $* (OLLAMA_HOST=$OLLAMA_HOST)" >>"$RECORD_LOG"
case "$1" in
  serve) cd "{repo}" && exec "{python}" -m tests.ollama_standin --port "${{OLLAMA_HOST##*:}}" ;;
  pull) exit 0 ;;
  show) exec curl -fsS "http://$OLLAMA_HOST/api/show" -d "{{\\"model\\": \\"$2\\"}}" ;;
esac
exit 2
"""

_PYTHON311 = """#!/bin/bash
# Stand-in for the image's python3.11: `-m venv` makes a venv whose python and gunicorn are this
# test venv's (the packages requirements-server.txt names are already in it); anything else runs as is.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  printf '%s\\n' "python3.11 $*" >>"$RECORD_LOG"
  dest="${{@: -1}}"
  mkdir -p "$dest/bin"
  for exe in python gunicorn; do printf '#!/bin/bash\\nexec "{bin}/%s" "$@"\\n' "$exe" >"$dest/bin/$exe"; done
  printf '#!/bin/bash\\nprintf "%%s\\\\n" "pip $*" >>"$RECORD_LOG"\\n' >"$dest/bin/pip"
  chmod +x "$dest/bin/"*
  exit 0
fi
exec "{bin}/python" "$@"
"""


class OnstartPlayer:
    """Plays a rented instance by running the onstart script from the create request itself, with the
    request's env, in a scratch root: stand-ins replace what needs the internet (apt-get, the ollama
    CLI and server, the image's python, the hub download comes from a prepared cache, git clones this
    checkout); the rest is real, down to gunicorn serving the real server with TLS on 127.0.0.1."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.roots: list[Path] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.record_log = work / "calls.log"
        self.own_ports = False
        """True: each instance serves on a free port of its own, mapped from the container port as Vast
        maps it (several instances on 127.0.0.1 at once); False: on the container port itself."""
        self.bin = work / "bin"
        self.bin.mkdir(parents=True)
        venv_bin = Path(sys.executable).parent
        for name, text in (("ollama", _OLLAMA_CLI.format(repo=REPO, python=sys.executable)),
                           ("python3.11", _PYTHON311.format(bin=venv_bin)),
                           ("apt-get", '#!/bin/bash\nprintf "%s\\n" "apt-get $*" >>"$RECORD_LOG"\n')):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.repo = work / "repo"
        self._snapshot_checkout(self.repo)

    @staticmethod
    def _snapshot_checkout(dest: Path) -> None:
        """A git repo (branch main) holding this checkout's files as they are now, for the instance to clone."""
        files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                               capture_output=True, check=True, timeout=30).stdout.decode().split("\0")
        for rel in filter(None, files):
            src = REPO / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / rel).write_bytes(src.read_bytes())
                (dest / rel).chmod(src.stat().st_mode & 0o777)
        git = ["git", "-C", str(dest), "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
        for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
            subprocess.run(git + cmd, check=True, capture_output=True, timeout=60)

    def __call__(self, instance_id: int, offer: dict[str, object], body: dict[str, object]) -> dict[str, object]:
        env_in: dict[str, str] = body["env"]  # type: ignore[assignment]
        (port,) = [int(k.split(":")[1]) for k in env_in if k.startswith("-p ")]
        public = free_port() if self.own_ports else port
        root = self.work / f"instance-{instance_id}"
        self.roots.append(root)
        # What Chatterbox's weights look like once fetched: the hub cache the onstart fills.
        snap = root / "var/lib/ai-telephone/hf/hub/models--ResembleAI--chatterbox"
        (snap / "snapshots" / ("c" * 40)).mkdir(parents=True)
        (snap / "refs").mkdir()
        (snap / "refs/main").write_text("c" * 40)
        script = root / "onstart.sh"
        script.write_text(str(body["onstart"]))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_TELEPHONE", "VAST_", "OLLAMA"))}
        env.update({k: v for k, v in env_in.items() if not k.startswith("-")})
        env.update(
            AI_TELEPHONE_ONSTART_ROOT=str(root), AI_TELEPHONE_ONSTART_BIND_HOST="127.0.0.1",
            AI_TELEPHONE_ONSTART_USER="root", AI_TELEPHONE_ONSTART_OLLAMA=f"127.0.0.1:{free_port()}",
            AI_TELEPHONE_ONSTART_PATH=str(self.bin), RECORD_LOG=str(self.record_log), HOME=str(root / "root"),
            AI_TELEPHONE_ONSTART_PORT=str(public),
            HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
            # `git clone https://example.invalid/ai-telephone.git` clones the snapshot of this checkout.
            GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0=f"url.file://{self.repo}.insteadOf",
            GIT_CONFIG_VALUE_0="https://example.invalid/ai-telephone.git",
        )
        self.procs[instance_id] = subprocess.Popen(["bash", str(script)], env=env, cwd=root, start_new_session=True,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return {"ports": {f"{port}/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(public)}]}}

    def logs(self) -> str:
        """Every instance's onstart and server log, for a failure message."""
        found = [p for root in self.roots for p in (root / "var/log/ai-telephone-onstart.log",
                                                    root / "var/lib/ai-telephone/server.log") if p.exists()]
        return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-4000:]}" for p in found)

    def destroy(self, instance_id: int) -> None:
        """The instance is destroyed: everything its onstart started ends (the stand-in's on_destroy)."""
        proc = self.procs.pop(instance_id, None)
        if proc is not None:
            _end_groups({proc.pid})
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def stop(self) -> None:
        """End every instance still playing."""
        for instance_id in list(self.procs):
            self.destroy(instance_id)


def _end_groups(groups: set[int]) -> None:
    """SIGTERM, then SIGKILL what is left, the processes of these process groups and all their descendants."""
    import signal
    import time

    targets = _members_and_descendants(groups)  # taken once: orphans lose their parent link when it dies
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 15
        while targets and time.monotonic() < deadline:
            targets = {p for p in targets if _state(p) != "Z"}
            time.sleep(0.1)
        if not targets:
            return


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields after "pid (comm) "


def _state(pid: int) -> str:
    fields = _stat(pid)
    return fields[0] if fields else "Z"


def _members_and_descendants(groups: set[int]) -> set[int]:
    """Processes in these process groups, and every descendant of them (runuser starts a new session)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))  # ppid, pgid
    found = {pid for pid, (_, pgid) in table.items() if pgid in groups}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


@pytest.fixture
def onstart_player(tmp_path: Path) -> Iterator[OnstartPlayer]:
    """An :class:`OnstartPlayer` whose instances are stopped after the test."""
    player = OnstartPlayer(tmp_path / "onstart")
    try:
        yield player
    finally:
        player.stop()
