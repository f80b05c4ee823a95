"""A real ``python -m cloud_server`` subprocess (Ollama stand-in behind it) and the Pi client in file mode.

Used by the Pi call-side tests: the server runs as its own process so a test can kill it mid-reply.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], timeout: float, context: ssl.SSLContext | None = None
) -> dict[str, Any] | None:
    """Poll ``url``/health until it answers: its JSON; None when ``proc`` exited or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(url + "/health", timeout=2, context=context) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except OSError:
            time.sleep(0.2)
    return None


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, SIGKILL after ``grace`` seconds, and reap (bounded)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=10)


@dataclass
class ServerProcess:
    """A running cloud server and how to reach it."""

    url: str
    key: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL: the process dies mid-whatever, as a crashed GPU box would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate and reap."""
        stop_process(self.proc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def server_config_file(workdir: Path, ollama_url: str, server: dict[str, Any] | None = None) -> Path:
    """``workdir``/server.yaml: the Piper voice, Ollama at ``ollama_url``, data under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "server": {
            "llm": {"backend": "ollama", "ollama_host": ollama_url, "model": "llama3.2:3b", "timeout_seconds": 20.0},
            "tts": {"engine": "piper"},
            "data_dir": str(workdir / "data"),
            **(server or {}),
        }
    }
    return write_yaml(workdir / "server.yaml", cfg)


def start_server(
    workdir: Path,
    ollama_url: str,
    server: dict[str, Any] | None = None,
    port: int | None = None,
    tls: tuple[Path, Path] | None = None,
    key: str | None = None,
) -> ServerProcess:
    """Start ``python -m cloud_server`` with the Piper voice and Ollama at ``ollama_url``; wait until healthy.

    ``tls`` is (certificate, private key) to serve HTTPS; ``port`` None picks a free one.
    """
    config_path = server_config_file(workdir, ollama_url, server)
    key = key or secrets.token_urlsafe(24)
    port = port or free_port()
    args = ["--certfile", str(tls[0]), "--keyfile", str(tls[1])] if tls else []
    scheme = "https" if tls else "http"
    env = dict(os.environ, AI_TELEPHONE_CONFIG=str(config_path), AI_TELEPHONE_API_KEY=key, TQDM_DISABLE="1")
    env.pop("OLLAMA_HOST", None)
    log = workdir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_server", "--host", "127.0.0.1", "--port", str(port), *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = ServerProcess(f"{scheme}://127.0.0.1:{port}", key, proc, log)
    context = ssl.create_default_context(cafile=str(tls[0])) if tls else None
    if wait_healthy(running.url, proc, START_TIMEOUT, context) is not None:
        return running
    if proc.poll() is not None:
        raise RuntimeError(f"cloud_server exited with {proc.returncode}:\n{running.log_text()[-3000:]}")
    running.stop()
    raise RuntimeError(f"cloud_server not healthy within {START_TIMEOUT}s:\n{running.log_text()[-3000:]}")


def pi_config(workdir: Path, **pi: Any) -> Path:
    """A config.yaml for the Pi client with its cache under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    return write_yaml(workdir / "pi.yaml", {"pi": {"cache_dir": str(workdir / "cache"), **pi}})


def pi_client_process(
    config: Path, server_url: str, key: str, question: Path, reply: Path, *extra: str
) -> subprocess.Popen[str]:
    """Start ``python -m pi_client`` in one-turn file mode."""
    env = dict(os.environ, AI_TELEPHONE_CONFIG=str(config), AI_TELEPHONE_API_KEY=key, TQDM_DISABLE="1")
    env.pop("AI_TELEPHONE_SERVER", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pi_client",
            "--server",
            server_url,
            "--input-wav",
            str(question),
            "--output-wav",
            str(reply),
            *extra,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_pi_client(
    config: Path, server_url: str, key: str, question: Path, reply: Path, *extra: str, timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """Run one file-mode turn to the end (bounded)."""
    proc = pi_client_process(config, server_url, key, question, reply, *extra)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate(timeout=10)
        raise AssertionError(f"pi_client did not finish within {timeout}s:\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl (what the Pi pins as ``ca_cert``)."""
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
