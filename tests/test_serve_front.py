"""`scripts/serve`: HAProxy in front of gunicorn, as in production, against slowloris (issue 14).

The server runs as a subprocess exactly as the Vast.ai onstart and the systemd unit start it
(`scripts/serve --port P`, TLS from AI_TELEPHONE_TLS_CERT/KEY with a certificate made by
deploy/vastai/tls.py, the Piper voice, the Ollama stand-in). Hundreds of slow unauthenticated
connections stay open (tests/slow_clients.py, reopened as the front closes them) while /health and
a real /process-text call are answered. Bare gunicorn, as it served before, stalls under the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from deploy.vastai import tls
from tests.ollama_standin import OllamaStandIn
from tests.server_rig import REPO_ROOT, ServerProcess, free_port, server_config_file, wait_healthy
from tests.slow_clients import SLOWLORIS, SlowClients

HELD = ("hello", "idle", "headers", "body")
SLOW = sum(SLOWLORIS[kind] for kind in HELD)
"""Slow connections held open during a call (300; and 25 ``big_body`` ones, answered 401 and reopened)."""
START_TIMEOUT = 120.0


@pytest.fixture(scope="module", autouse=True)
def _enough_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * SLOW
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= want, "the open-file limit is too low for this test"


def _write_cert(directory: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate as `python -m deploy.vastai up` makes it (the Pi pins it), and its key (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    made = tls.generate(ip)
    cert, key = directory / "server-cert.pem", directory / "server-key.pem"
    cert.write_bytes(made.cert_pem)
    key.touch(mode=0o600)
    key.write_bytes(made.key_pem)
    return cert, key


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def _private_dir(server: ServerProcess) -> Path:
    """The directory scripts/serve keeps its socket, configuration and PEM in (its first log line names it)."""
    match = re.search(r"gunicorn on unix:(\S+)/gunicorn\.sock", server.log_text())
    assert match, server.log_text()[-2000:]
    return Path(match.group(1))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _end(proc: subprocess.Popen[bytes], grace: float = 45.0) -> int:
    """SIGTERM the process group, SIGKILL what is left after ``grace``; the exit status."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of the group left behind
    return proc.wait(timeout=10)


def start_serve(workdir: Path, ollama_url: str, cert: tuple[Path, Path] | None, *,
                bare_gunicorn: bool = False) -> ServerProcess:
    """`scripts/serve --port P` as production runs it (or, ``bare_gunicorn``, gunicorn serving TLS
    itself, as production did before); wait until /health answers."""
    config = server_config_file(workdir, ollama_url, {"host": "127.0.0.1"})
    key = secrets.token_urlsafe(24)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_TELEPHONE", "OLLAMA"))}
    env.update(AI_TELEPHONE_CONFIG=str(config), AI_TELEPHONE_API_KEY=key, AI_TELEPHONE_VENV=sys.prefix,
               TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TMPDIR=str(workdir), XDG_RUNTIME_DIR=str(workdir))
    if cert:
        env.update(AI_TELEPHONE_TLS_CERT=str(cert[0]), AI_TELEPHONE_TLS_KEY=str(cert[1]))
    if bare_gunicorn:
        env["AI_TELEPHONE_BIND"] = f"127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "gunicorn", "-c", "cloud_server/gunicorn.conf.py", "cloud_server:create_app()"]
    else:
        cmd = [str(REPO_ROOT / "scripts/serve"), "--port", str(port)]
    log = workdir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    running = ServerProcess(f"{'https' if cert else 'http'}://127.0.0.1:{port}", key, proc, log)
    context = ssl.create_default_context(cafile=str(cert[0])) if cert else None
    if wait_healthy(running.url, proc, START_TIMEOUT, context) is None:
        _end(proc)
        raise RuntimeError(f"{cmd[0]} did not become healthy:\n{running.log_text()[-3000:]}")
    return running


@pytest.fixture(scope="module")
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn() as running:
        yield running


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, standin: OllamaStandIn,
          cert: tuple[Path, Path]) -> Iterator[ServerProcess]:
    """`scripts/serve` with TLS, shared by the tests of this module; stopped (and checked) at the end."""
    server = start_serve(tmp_path_factory.mktemp("front"), standin.url, cert)
    try:
        yield server
    finally:
        _end(server.proc)


def _health(url: str, context: ssl.SSLContext, timeout: float) -> tuple[float, dict[str, object]]:
    import json

    started = time.monotonic()
    with urllib.request.urlopen(url + "/health", timeout=timeout, context=context) as resp:
        body = json.loads(resp.read())
    return time.monotonic() - started, body


def _call(server: ServerProcess, cert: Path, text: str) -> requests.Response:
    """A real turn: POST /process-text, the whole streamed WAV read."""
    return requests.post(f"{server.url}/process-text", json={"text": text},
                         headers={"Authorization": f"Bearer {server.key}"}, verify=str(cert), timeout=(20, 120))


def test_hundreds_of_slow_connections_do_not_stop_health_or_calls(front: ServerProcess, standin: OllamaStandIn,
                                                                  cert: tuple[Path, Path]) -> None:
    """325 slow connections open: /health and calls are answered; and over the front's timeouts (the
    attacker reopening what the front closes) /health keeps answering and a second call too."""
    context = ssl.create_default_context(cafile=str(cert[0]))
    port = int(front.url.rsplit(":", 1)[1])
    warm = _call(front, cert[0], "Hello, is anybody there?")  # the first call pays for lazy loading
    assert warm.status_code == 200, warm.text
    with SlowClients(port, ca=cert[0], max_seconds=240, opens_per_second=50) as slow:
        assert slow.open_now(*HELD) == SLOW, slow.by_kind()
        latencies = []
        for _ in range(5):
            seconds, health = _health(front.url, context, timeout=30)
            assert health["status"] == "ok"
            latencies.append(seconds)
            assert slow.open_now(*HELD) >= 0.9 * SLOW, slow.by_kind()
        standin.script("Yes, I can hear you through all that noise. ")  # new words: Piper speaks them now
        turn = _call(front, cert[0], "Operator, can you still hear me?")
        open_after_call = slow.open_now(*HELD)
        assert turn.status_code == 200, turn.text
        assert turn.headers["Content-Type"].startswith("audio/wav")
        assert turn.content[:4] == b"RIFF" and len(turn.content) > 44 + 22050  # over half a second of speech
        assert open_after_call >= 0.9 * SLOW, slow.by_kind()  # still open when the call was answered
        # Past the front's timeouts (headers and body 10 s, handshake and silence 30 s): every kind is
        # cut and reopened, and /health answers all along.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and min(slow.closed_by_server[kind] for kind in HELD) == 0:
            latencies.append(_health(front.url, context, timeout=30)[0])
            time.sleep(0.5)
        while time.monotonic() < deadline and slow.open_now(*HELD) < SLOW:  # the attacker refills
            latencies.append(_health(front.url, context, timeout=30)[0])
            time.sleep(0.5)
        open_at_second_call = slow.open_now(*HELD)
        standin.script("Still here, on the line, and listening. ")
        second = _call(front, cert[0], "Are you still there?")
        standin.script()
        by_kind, answered, closed = slow.by_kind(), dict(slow.answered), dict(slow.closed_by_server)
    assert all(closed[kind] > 0 for kind in HELD), closed  # the front bounds every kind
    assert second.status_code == 200 and len(second.content) > 44 + 22050
    assert open_at_second_call == SLOW, by_kind
    # Those sent more than the front buffers: gunicorn saw them, said 401 and did not wait for the rest.
    assert answered["big_body"] + closed["big_body"] > 0
    print(f"\n{SLOW} slow connections ({by_kind} open at the end; {slow.opened} opened; "
          f"answered {answered}; closed by the server {closed}): {len(latencies)} /health, "
          f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
          f"calls answered with {len(turn.content)} and {len(second.content)} bytes of WAV")
    _health(front.url, context, timeout=30)  # and afterwards
    log = front.log_text()
    assert "PRIVATE KEY" not in log and front.key not in log


def test_bare_gunicorn_stalls_under_the_same_attack(tmp_path: Path, standin: OllamaStandIn,
                                                    cert: tuple[Path, Path]) -> None:
    """Why the front exists: gunicorn serving TLS itself (as production did) does the handshake and
    reads headers in its 8 worker threads without a timeout, so a few slow clients stop it. If this
    ever fails, gunicorn has fixed that; the front still bounds connections, handshakes and headers."""
    bare = start_serve(tmp_path, standin.url, cert, bare_gunicorn=True)
    context = ssl.create_default_context(cafile=str(cert[0]))
    try:
        # The TLS kinds cannot get in (the handshakes stall); the others are enough.
        slow = SlowClients(int(bare.url.rsplit(":", 1)[1]), ca=cert[0], max_seconds=60).start(fill_timeout=5)
        try:
            assert slow.open_now(*HELD) >= 8
            with pytest.raises(OSError):  # a timeout: nothing answers
                _health(bare.url, context, timeout=15)
        finally:
            slow.stop()
        _health(bare.url, context, timeout=30)  # the moment they close, it answers again
    finally:
        _end(bare.proc)


def test_a_streamed_reply_passes_the_front_unbuffered(front: ServerProcess, standin: OllamaStandIn,
                                                      cert: tuple[Path, Path]) -> None:
    """The first sentence's audio reaches the caller while the LLM still holds the second one back."""
    gate = threading.Event()
    standin.script("This is the first sentence of a long answer. ", gate, "And this is the second one.")
    try:
        with requests.post(f"{front.url}/process-text", json={"text": "Tell me a story"}, stream=True,
                           headers={"Authorization": f"Bearer {front.key}"}, verify=str(cert[0]),
                           timeout=(20, 60)) as resp:
            assert resp.status_code == 200
            chunks = resp.iter_content(chunk_size=None)
            early = b""
            while len(early) < 44 + 22050:  # the header and half a second of the first sentence
                early += next(chunks)
            (chat,) = standin.chat_requests()[-1:]
            assert not gate.is_set() and not chat.completed  # the reply cannot have ended yet
            gate.set()
            rest = b"".join(chunks)
        assert chat.completed and len(rest) > 22050  # then the second sentence came too
        assert early[:4] == b"RIFF"
    finally:
        gate.set()
        standin.script()


def test_the_front_serves_the_pinned_certificate_and_keeps_its_pem_private(front: ServerProcess,
                                                                           cert: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    port = int(front.url.rsplit(":", 1)[1])
    pinned = ssl.create_default_context(cafile=str(cert[0]))  # what the Pi does: the certificate is the CA
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            pinned.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        served = conn.getpeercert(binary_form=True)
    assert served == ssl.PEM_cert_to_DER_cert(cert[0].read_text())
    other, _ = _write_cert(tmp_path / "other")  # a certificate for the same IP, not the pinned one
    with pytest.raises(urllib.error.URLError) as refused:
        _health(front.url, ssl.create_default_context(cafile=str(other)), timeout=10)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    # The combined certificate + key HAProxy reads lives in a private directory only the server reads.
    run = _private_dir(front)
    assert run.stat().st_mode & 0o777 == 0o700
    assert (run / "front.pem").stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" not in front.log_text()


def test_serve_stops_both_on_sigterm_and_either_dying_stops_the_other(tmp_path: Path,
                                                                      standin: OllamaStandIn) -> None:
    # SIGTERM (systemctl stop, Ctrl-C): both stop, exit 0, the private directory is gone.
    server = start_serve(tmp_path / "a", standin.url, None)
    try:
        kids = _children(server.proc.pid)
        assert _private_dir(server).is_dir()
        assert any("haproxy" in c for c in kids.values()) and any("gunicorn" in c for c in kids.values()), kids
        os.kill(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
        assert not [pid for pid in kids if _alive(pid)]
        assert not _private_dir(server).exists()
    finally:
        _end(server.proc)
    # gunicorn dies: serve stops haproxy and exits non-zero, so systemd (Restart=on-failure) or the
    # onstart's loop starts it again.
    server = start_serve(tmp_path / "b", standin.url, None)
    try:
        kids = _children(server.proc.pid)
        (gunicorn,) = [pid for pid, c in kids.items() if "gunicorn" in c]
        os.kill(gunicorn, signal.SIGKILL)
        assert server.proc.wait(timeout=60) != 0
        assert not [pid for pid in kids if _alive(pid)]
        assert not _private_dir(server).exists()
        assert "gunicorn exited" in server.log_text()
    finally:
        _end(server.proc)


def test_serve_refuses_half_a_tls_configuration_and_is_shellcheck_clean(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AI_TELEPHONE")}
    env.update(AI_TELEPHONE_TLS_CERT=str(tmp_path / "cert.pem"), AI_TELEPHONE_BIND="127.0.0.1:9",
               AI_TELEPHONE_VENV=sys.prefix)
    refused = subprocess.run([str(REPO_ROOT / "scripts/serve")], env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "AI_TELEPHONE_TLS_KEY" in refused.stderr
    assert shutil.which("shellcheck"), "scripts/setup installs shellcheck"
    checked = subprocess.run(["shellcheck", str(REPO_ROOT / "scripts/serve")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout


def test_a_caller_hanging_up_through_the_front_stops_a_whole_file_synthesis(front: ServerProcess,
                                                                             cert: tuple[Path, Path]) -> None:
    """HAProxy passes the hang-up on (``option abortonclose``): the server stops and records a 499.

    Without it the front keeps waiting for gunicorn after the caller's FIN, so the server speaks all
    40 sentences for nobody and counts a 200.
    """
    auth = {"Authorization": f"Bearer {front.key}"}
    sentences = " ".join(f"This is sentence number {n} of a long story that nobody will hear." for n in range(40))
    body = json.dumps({"model": "tts-1", "voice": "operator", "response_format": "mp3", "input": sentences}).encode()
    context = ssl.create_default_context(cafile=str(cert[0]))
    port = int(front.url.rsplit(":", 1)[1])

    def active() -> int:
        reply = requests.get(f"{front.url}/health", headers=auth, verify=str(cert[0]), timeout=10)
        return int(reply.json()["queue"]["active"])

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as caller:
        caller.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       + f"Authorization: Bearer {front.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 30
        while active() == 0 and time.monotonic() < deadline:  # the voice is at work on this request
            time.sleep(0.02)
    deadline = time.monotonic() + 60
    while active() != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    metrics = requests.get(f"{front.url}/metrics", headers=auth, verify=str(cert[0]), timeout=10).text
    speech = [ln for ln in metrics.splitlines() if ln.startswith("ai_telephone_requests_total") and "speech" in ln]
    assert any('status="499"' in line for line in speech), speech
