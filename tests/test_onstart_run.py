"""The onstart script itself, as sent in the create request, brings up the real server that `up` finds.

The stand-in's instance runs the script with the request's env in a scratch root (fixtures_deploy
OnstartPlayer): the secrets are written from env, Ollama (stand-in) is started on loopback and polled
until ready, this repository is cloned, the server started with scripts/serve (TLS), and `up` verifies
/health against the pinned certificate (served by scripts/serve's HAProxy in front of gunicorn); a real
turn then goes through the Ollama the onstart started.
"""

from __future__ import annotations

import re
import stat

import requests

from tests.fixtures_deploy import VAST_KEY, OnstartPlayer, RunCli, free_port
from tests.vast_standin import VastStandIn, make_offer


def test_onstart_from_the_request_brings_up_a_healthy_tls_server(
    run_cli: RunCli, deploy_env: dict[str, str], onstart_player: OnstartPlayer
) -> None:
    port = free_port()
    flags = ("--repo-url", "https://example.invalid/ai-telephone.git", "--poll", "0.25", "--start-timeout", "30",
             "--health-timeout", "240", "--max-attempts", "1", "--port", str(port),
             "--set", "server.tts.engine=piper")  # no GPU here: the Piper voice instead of Chatterbox
    with VastStandIn(VAST_KEY, [make_offer(71)], on_create=onstart_player) as api:
        up = run_cli(api.url, "up", *flags, timeout=300)
        (root,) = onstart_player.roots
        onstart_log = (root / "var/log/ai-telephone-onstart.log").read_text()
        server_log = (root / "var/lib/ai-telephone/server.log")
        assert up.returncode == 0, up.stderr + onstart_log + (server_log.read_text() if server_log.exists() else "")

        lines = dict(re.findall(r"^(AI_TELEPHONE\w*)=(.*)$", up.stdout, re.M))
        assert lines["AI_TELEPHONE_SERVER"] == f"https://127.0.0.1:{port}"
        pinned = root / "pinned.pem"
        pinned.write_text(up.stdout[up.stdout.index("-----BEGIN CERTIFICATE-----"):])
        health = requests.get(f"{lines['AI_TELEPHONE_SERVER']}/health", verify=str(pinned), timeout=10,
                              headers={"Authorization": f"Bearer {lines['AI_TELEPHONE_API_KEY']}"}).json()
        assert health["status"] == "ok" and health["llm"]["backend"] == "ollama" and health["llm"]["reachable"]
        turn = requests.post(f"{lines['AI_TELEPHONE_SERVER']}/process-text", json={"text": "Hello there, operator?"},
                             headers={"Authorization": f"Bearer {lines['AI_TELEPHONE_API_KEY']}"},
                             verify=str(pinned), timeout=120)
        assert turn.status_code == 200 and turn.content[:4] == b"RIFF" and len(turn.content) > 44 + 2205
        session = requests.get(f"{lines['AI_TELEPHONE_SERVER']}/sessions/{turn.headers['X-Session-Id']}",
                               headers={"Authorization": f"Bearer {lines['AI_TELEPHONE_API_KEY']}"},
                               verify=str(pinned), timeout=10).json()
        assert "Ollama stand-in" in session["last_reply"]  # the reply came through the Ollama onstart started
        served = server_log.read_text()  # through scripts/serve: HAProxy holds the port and the pinned certificate
        assert f"serve: HAProxy on https://127.0.0.1:{port}" in served and "Ready: voice" in served

    # What the onstart did, in order, and what it left on disk.
    calls = onstart_player.record_log.read_text()
    assert "apt-get install" in calls
    assert re.search(r"ollama serve \(OLLAMA_HOST=127\.0\.0\.1:\d+\)", calls)  # loopback only
    assert "ollama pull llama3.2:3b" in calls and "ollama show llama3.2:3b" in calls
    assert "python3.11 -m venv --system-site-packages" in calls
    assert re.search(r"pip install .*-r \S+/opt/ai-telephone/requirements-server.txt", calls)
    steps = ["wrote the API key", "is ready", "model llama3.2:3b is ready", "cloning",
             "fetching Chatterbox weights", "server starting on port"]
    positions = [onstart_log.find(s) for s in steps]
    assert -1 not in positions and positions == sorted(positions), onstart_log
    etc = root / "etc/ai-telephone"
    for secret in ("api-key", "server-key.pem"):
        assert stat.S_IMODE((etc / secret).stat().st_mode) == 0o600
    assert (etc / "api-key").read_text().strip() == lines["AI_TELEPHONE_API_KEY"]
    assert "AI_TELEPHONE__SERVER__TTS__ENGINE=piper" in (etc / "server.env").read_text()
    assert lines["AI_TELEPHONE_API_KEY"] not in onstart_log and "PRIVATE KEY" not in onstart_log
