"""`python -m deploy.vastai` against the local Vast.ai stand-in, through the official SDK unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from common.config import config_from_dict
from deploy.vastai import tls
from deploy.vastai.onstart import render
from deploy.vastai.settings import InstancePlan
from tests.fixtures_deploy import FAST, VAST_KEY, OnstartPlayer, PiScratch, RunCli, free_port
from tests.vast_standin import VastStandIn, make_offer

_NO_PORT: dict[str, object] = {"ports": {"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9"}]}}


def _stored_api_key(env: dict[str, str]) -> str:
    return (Path(env["XDG_CONFIG_HOME"]) / "ai-telephone/vast/ai-telephone/api-key").read_text().strip()


def test_no_usable_offer_is_a_clear_error(run_cli: RunCli, deploy_env: dict[str, str]) -> None:
    offers = [make_offer(1, gpu_name="RTX 5090", compute_cap=1200), make_offer(2, dph_total=4.0)]
    with VastStandIn(VAST_KEY, offers) as api:
        result = run_cli(api.url, "up", *FAST)
    assert result.returncode == 1
    assert "no Vast.ai offer matches" in result.stderr and "--max-price" in result.stderr
    assert result.stdout == ""
    assert not api.calls("PUT", "/api/v0/asks/")


def test_dead_instance_is_destroyed_and_the_next_offer_tried(run_cli: RunCli, deploy_env: dict[str, str]) -> None:
    offers = [make_offer(11, dlperf_per_dphtotal=300.0), make_offer(12, dlperf_per_dphtotal=200.0)]
    statuses = {11: ["loading", "exited"], 12: ["loading"]}  # 12 never gets past loading: start timeout
    with VastStandIn(VAST_KEY, offers, statuses, on_create=lambda *_: _NO_PORT) as api:
        result = run_cli(api.url, "up", *FAST)
    assert result.returncode == 1
    assert "2 offers tried, none became healthy" in result.stderr
    created = [int(r.path.split("/")[4]) for r in api.calls("PUT", "/api/v0/asks/")]
    destroyed = [int(r.path.split("/")[4]) for r in api.calls("DELETE", "/api/v0/instances/")]
    assert created == [11, 12]
    assert destroyed == [31000, 31001] and api.instances == {}
    assert "status exited" in result.stderr and "still loading after" in result.stderr


def test_an_instance_that_vanishes_is_given_up_and_the_next_offer_tried(run_cli: RunCli) -> None:
    offers = [make_offer(13, dlperf_per_dphtotal=300.0), make_offer(14)]
    with VastStandIn(VAST_KEY, offers, {13: ["loading", "gone"], 14: ["loading", "exited"]}) as api:
        result = run_cli(api.url, "up", *FAST)
    assert "Instance 31000 failed: the instance disappeared" in result.stderr
    assert "Instance 31000 was already gone" in result.stderr
    assert [r.path for r in api.calls("PUT", "/api/v0/asks/")] == ["/api/v0/asks/13/", "/api/v0/asks/14/"]
    assert result.returncode == 1 and "2 offers tried" in result.stderr


def test_server_never_healthy_times_out_and_is_destroyed(run_cli: RunCli, deploy_env: dict[str, str]) -> None:
    with VastStandIn(VAST_KEY, [make_offer(21)], on_create=lambda *_: _NO_PORT) as api:
        result = run_cli(api.url, "up", *FAST, "--max-attempts", "1")
    assert result.returncode == 1
    assert "no healthy /health after" in result.stderr
    assert [r.path for r in api.calls("DELETE", "/api/v0/instances/")] == ["/api/v0/instances/31000/"]


def test_create_request_carries_onstart_env_label_and_no_secret_in_logs(
    run_cli: RunCli, deploy_env: dict[str, str]
) -> None:
    with VastStandIn(VAST_KEY, [make_offer(31)], on_create=lambda *_: _NO_PORT) as api:
        result = run_cli(api.url, "up", *FAST, "--max-attempts", "1", "--model", "qwen2.5:7b")
    (search,) = api.calls("POST", "/api/v0/bundles/")
    assert search.headers["Content-Type"] == "application/json"
    assert search.body["order"] == [["dlperf_per_dphtotal", "desc"]] and search.body["type"] == "on-demand"
    assert search.body["compute_cap"] == {"gte": 700, "lte": 900} and search.body["num_gpus"] == {"eq": 1}
    assert search.body["gpu_ram"] == {"gte": 16000.0} and search.body["cuda_max_good"] == {"gte": 12.4}
    assert search.body["verified"] == {"eq": True} and search.body["rentable"] == {"eq": True}  # SDK defaults
    (put,) = api.calls("PUT", "/api/v0/asks/31/")
    body = put.body
    api_key = _stored_api_key(deploy_env)
    assert body["label"] == "ai-telephone"
    assert body["image"] == InstancePlan().image and body["runtype"] == "ssh_direc ssh_proxy"
    assert body["env"]["-p 8000:8000"] == "1"
    assert body["env"]["AI_TELEPHONE_API_KEY"] == api_key
    assert {"AI_TELEPHONE_TLS_CERT_B64", "AI_TELEPHONE_TLS_KEY_B64"} <= set(body["env"])
    plan = InstancePlan(ollama_model="qwen2.5:7b")
    assert body["onstart"] == render(plan, "https://example.invalid/ai-telephone.git")
    assert len(body["onstart"].encode()) < 16 * 1024 and api_key not in body["onstart"]
    # Secrets never reach the log: not the server key, not the Vast key, not the TLS private key.
    assert api_key not in result.stderr + result.stdout
    assert VAST_KEY not in result.stderr + result.stdout
    assert "PRIVATE KEY" not in result.stderr + result.stdout
    assert all(r.headers.get("Authorization") == f"Bearer {VAST_KEY}" for r in api.requests)


def test_vast_key_from_the_cli_key_file_and_bad_key_messages(run_cli: RunCli, deploy_env: dict[str, str]) -> None:
    env = {k: v for k, v in deploy_env.items() if k != "VAST_API_KEY"}
    with VastStandIn(VAST_KEY, []) as api:
        missing = run_cli(api.url, "status", env=env)
        assert missing.returncode == 1 and "no Vast.ai API key" in missing.stderr
        key_file = Path(env["XDG_CONFIG_HOME"]) / "vastai/vast_api_key"
        key_file.parent.mkdir(parents=True)
        key_file.write_text(VAST_KEY + "\n")  # where `vastai set api-key` keeps it
        ok = run_cli(api.url, "status", env=env)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == "no instance labelled ai-telephone\n"
        key_file.write_text("wrong-key\n")
        refused = run_cli(api.url, "up", *FAST, env=env)
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr and "VAST_API_KEY" in refused.stderr
    assert "wrong-key" not in refused.stderr


def test_down_asks_before_destroying(run_cli: RunCli, deploy_env: dict[str, str]) -> None:
    with VastStandIn(VAST_KEY, []) as api:
        ours = api.add_instance("ai-telephone")
        theirs = api.add_instance("someone-else")
        kept = run_cli(api.url, "down", stdin="n\n")
        assert kept.returncode == 0 and f"kept instance {ours}" in kept.stdout
        assert not api.calls("DELETE", "/api/v0/instances/")
        confirmed = run_cli(api.url, "down", stdin="y\n")
        assert f"destroyed instance {ours}" in confirmed.stdout
        assert set(api.instances) == {theirs}
        again = run_cli(api.url, "down", "--yes")
    assert again.returncode == 0 and again.stdout == "no instance labelled ai-telephone\n"
    assert [r.path for r in api.calls("DELETE", "/api/v0/instances/")] == [f"/api/v0/instances/{ours}/"]


def test_up_clears_dead_labelled_instances_and_refuses_a_foreign_live_one(
    run_cli: RunCli, deploy_env: dict[str, str]
) -> None:
    with VastStandIn(VAST_KEY, [make_offer(41)]) as api:
        dead = api.add_instance("ai-telephone", status="exited")
        live = api.add_instance("ai-telephone", status="running")
        result = run_cli(api.url, "up", *FAST)
    assert result.returncode == 1
    assert f"instance {live} labelled ai-telephone exists, but its certificate is not" in result.stderr
    assert [r.path for r in api.calls("DELETE", "/api/v0/instances/")] == [f"/api/v0/instances/{dead}/"]
    assert not api.calls("PUT", "/api/v0/asks/")


def _pi_lines(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if re.match(r"^AI_TELEPHONE\w*=", line))


def test_up_until_healthy_with_the_real_server_then_reuse_status_and_down(
    run_cli: RunCli, deploy_env: dict[str, str], onstart_player: OnstartPlayer, pi_scratch: PiScratch,
    tmp_path: Path,
) -> None:
    """The whole flow: the first instance dies, the second runs its onstart, which starts the real server
    (offline: embedded LLM, Piper voice) with the certificate made here; the printed lines get the Pi
    (and this test) a verified, authenticated reply."""
    offers = [make_offer(51, dlperf_per_dphtotal=400.0), make_offer(52, dlperf_per_dphtotal=200.0)]
    statuses = {51: ["loading", "exited"], 52: ["loading", "loading", "running"]}
    port = free_port()
    slow = ("--repo-url", "https://example.invalid/ai-telephone.git", "--poll", "0.25", "--start-timeout", "30",
            "--health-timeout", "180", "--port", str(port),
            "--set", "server.llm.backend=embedded", "--set", "server.tts.engine=piper")
    with VastStandIn(VAST_KEY, offers, statuses, on_create=onstart_player, on_destroy=onstart_player.destroy) as api:
        up = run_cli(api.url, "up", *slow, timeout=300)
        assert up.returncode == 0, up.stderr + onstart_player.logs()

        # stdout is exactly what the Pi needs; the log shows progress and never a secret.
        pi = _pi_lines(up.stdout)
        api_key = _stored_api_key(deploy_env)
        assert pi["AI_TELEPHONE_API_KEY"] == api_key
        assert pi["AI_TELEPHONE__PI__CLIENT__CA_CERT"] == "/etc/ai-telephone/server-cert.pem"
        assert pi["AI_TELEPHONE_SERVER"] == f"https://127.0.0.1:{port}"
        pem = up.stdout[up.stdout.index("-----BEGIN CERTIFICATE-----"):]
        assert tls.ip_addresses(pem.encode()) == ["127.0.0.1"]
        assert tls.fingerprint(pem.encode()) in up.stdout
        assert api_key not in up.stderr and VAST_KEY not in up.stderr + up.stdout
        assert "Instance 31001: loading" in up.stderr and "is healthy" in up.stderr
        assert [r.path for r in api.calls("DELETE", "/api/v0/instances/")] == ["/api/v0/instances/31000/"]

        # The Pi's view: its config picks the lines up, and the pinned certificate gets a reply.
        cfg = config_from_dict({}, {k: v for k, v in pi.items() if k != "AI_TELEPHONE_API_KEY"})
        assert cfg.pi.server_url == pi["AI_TELEPHONE_SERVER"]
        assert cfg.pi.client.ca_cert == "/etc/ai-telephone/server-cert.pem"
        pinned = tmp_path / "pinned.pem"
        pinned.write_text(pem)
        health = requests.get(f"{cfg.pi.server_url}/health", verify=str(pinned), timeout=10,  # details: key
                              headers={"Authorization": f"Bearer {pi['AI_TELEPHONE_API_KEY']}"}).json()
        assert health["status"] == "ok" and health["tts"]["engine"] == "piper"
        assert health["llm"]["backend"] == "embedded"
        turn = requests.post(f"{cfg.pi.server_url}/process-text", json={"text": "Hello, who is this?"},
                             headers={"Authorization": f"Bearer {pi['AI_TELEPHONE_API_KEY']}"},
                             verify=str(pinned), timeout=120)
        assert turn.status_code == 200 and turn.headers["Content-Type"].startswith("audio/wav")
        assert turn.content[:4] == b"RIFF" and len(turn.content) > 44 + 2205  # a header and real speech
        wrong = requests.post(f"{cfg.pi.server_url}/process-text", json={"text": "Hi"},
                              headers={"Authorization": "Bearer not-the-key"}, verify=str(pinned), timeout=30)
        assert wrong.status_code == 401
        # A certificate the network could present instead is refused.
        impostor = tmp_path / "impostor.pem"
        impostor.write_bytes(tls.generate("127.0.0.1").cert_pem)
        try:
            requests.get(f"{cfg.pi.server_url}/health", verify=str(impostor), timeout=10)
            raise AssertionError("a certificate other than the pinned one was accepted")
        except requests.exceptions.SSLError:
            pass

        # The printed block installs on the Pi as it is.
        up_file = tmp_path / "up.txt"
        up_file.write_text(up.stdout)
        installed = pi_scratch.run(str(up_file))
        assert installed.returncode == 0, installed.stderr
        assert (pi_scratch.root / "etc/ai-telephone/server-cert.pem").read_text() == pem
        pi_env = (pi_scratch.root / "etc/ai-telephone/pi.env").read_text()
        assert f"AI_TELEPHONE_API_KEY={api_key}" in pi_env and f"AI_TELEPHONE_SERVER=https://127.0.0.1:{port}" in pi_env

        # A second `up` (no flags needed) finds the labelled instance instead of renting another.
        again = run_cli(api.url, "up", "--repo-url", "https://example.invalid/ai-telephone.git", timeout=120)
        assert again.returncode == 0, again.stderr
        assert _pi_lines(again.stdout) == pi and "reusing it" in again.stderr
        assert len(api.calls("PUT", "/api/v0/asks/")) == 2

        status = run_cli(api.url, "status")
        assert status.returncode == 0
        assert f"instance 31001 running RTX 4090 $0.420/h https://127.0.0.1:{port} health: status ok" in status.stdout
        assert api_key not in status.stdout + status.stderr

        down = run_cli(api.url, "down", "--yes")
        assert down.returncode == 0 and "destroyed instance 31001" in down.stdout
        assert api.instances == {}
        assert not (Path(deploy_env["XDG_CONFIG_HOME"]) / "ai-telephone/vast/ai-telephone/server-key.pem").exists()


def test_a_server_that_stays_degraded_is_replaced_unless_accepted(
    run_cli: RunCli, deploy_env: dict[str, str], onstart_player: OnstartPlayer
) -> None:
    """The real server pointed at an Ollama nobody runs answers `degraded`: after the grace it counts as
    failed; with --accept-degraded the maker gets it anyway, and the printed header says so."""
    flags = ("--repo-url", "https://example.invalid/ai-telephone.git", "--poll", "0.25", "--start-timeout", "30",
             "--health-timeout", "180", "--max-attempts", "1", "--set", "server.tts.engine=piper",
             "--set", "server.llm.ollama_host=http://127.0.0.1:9", "--set", "server.llm.warm_up=false")
    offers = [make_offer(61), make_offer(62, dph_total=0.5)]
    with VastStandIn(VAST_KEY, offers, on_create=onstart_player, on_destroy=onstart_player.destroy) as api:
        refused = run_cli(api.url, "up", *flags, "--port", str(free_port()), "--degraded-grace", "1", timeout=240)
        assert refused.returncode == 1
        assert "stays degraded (status degraded, llm reachable False, tts piper)" in refused.stderr
        assert [r.path for r in api.calls("DELETE", "/api/v0/instances/")] == ["/api/v0/instances/31000/"]
        accepted = run_cli(api.url, "up", *flags, "--port", str(free_port()), "--accept-degraded", timeout=240)
        assert accepted.returncode == 0, accepted.stderr
        assert accepted.stdout.startswith("# AI Telephone server: Vast.ai instance 31001, status degraded")
        assert set(api.instances) == {31001}


def test_an_offer_taken_before_create_is_skipped(run_cli: RunCli, deploy_env: dict[str, str]) -> None:
    offers = [make_offer(81, dlperf_per_dphtotal=500.0), make_offer(82)]
    with VastStandIn(VAST_KEY, offers, {82: ["loading", "exited"]}, taken={81}) as api:
        result = run_cli(api.url, "up", *FAST, "--max-attempts", "1")
    assert "offer 81 is no longer available (HTTP 404); trying the next offer" in result.stderr
    # The vanished offer did not use up the one attempt: offer 82 was rented (and failed).
    assert [r.path for r in api.calls("PUT", "/api/v0/asks/")] == ["/api/v0/asks/81/", "/api/v0/asks/82/"]
    assert result.returncode == 1 and "1 offer tried, none became healthy" in result.stderr
    with VastStandIn(VAST_KEY, offers, taken={81, 82}) as api:
        gone = run_cli(api.url, "up", *FAST)
    assert gone.returncode == 1 and "every matching offer was taken" in gone.stderr


def test_an_instance_on_another_address_than_its_offer_is_replaced(run_cli: RunCli) -> None:
    """The certificate names the offer's IP; an instance elsewhere could not be verified by the Pi."""
    moved = {**_NO_PORT, "public_ipaddr": "127.0.0.2"}
    with VastStandIn(VAST_KEY, [make_offer(91)], on_create=lambda *_: moved) as api:
        result = run_cli(api.url, "up", *FAST, "--max-attempts", "1")
    assert result.returncode == 1
    assert "its address 127.0.0.2 is not the offer's, so the certificate does not name it" in result.stderr
    assert [r.path for r in api.calls("DELETE", "/api/v0/instances/")] == ["/api/v0/instances/31000/"]
