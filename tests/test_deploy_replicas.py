"""`python -m deploy.vastai up --replicas N` against the Vast.ai stand-in, with real servers started by the
onstart script: N instances side by side, one CA bundle the phone trusts, reuse, growth, status and down."""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path

import pytest
import requests

from common.config import config_from_dict
from deploy.vastai import tls
from pi_client.server.client import ServerClient
from tests.fixtures_deploy import FAST, VAST_KEY, OnstartPlayer, PiScratch, RunCli
from tests.vast_standin import VastStandIn, make_offer

_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\n.+?\n-----END CERTIFICATE-----\n", re.S)
_SLOW = ("--repo-url", "https://example.invalid/ai-telephone.git", "--poll", "0.25", "--start-timeout", "30",
         "--health-timeout", "180", "--set", "server.tts.engine=piper")
"""Real servers: the Piper voice (no GPU here) and the Ollama stand-in the onstart starts."""


def _pi_lines(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^(AI_TELEPHONE\w*)=(.*)$", stdout, re.M))


def _offer_of(api: VastStandIn, instance_id: int) -> int:
    return int(api.instances[instance_id]["machine_id"]) - 5000  # make_offer: machine_id = 5000 + offer id


def _rented(api: VastStandIn) -> list[int]:
    return [int(r.path.split("/")[4]) for r in api.calls("PUT", "/api/v0/asks/")]


def test_up_replicas_rents_side_by_side_reuses_grows_and_the_phone_trusts_each_server(
    run_cli: RunCli, deploy_env: dict[str, str], onstart_player: OnstartPlayer, pi_scratch: PiScratch,
    tmp_path: Path,
) -> None:
    onstart_player.own_ports = True  # several servers on 127.0.0.1, each on its own mapped port
    offers = [make_offer(51, dlperf_per_dphtotal=400.0), make_offer(52, dlperf_per_dphtotal=300.0),
              make_offer(53, dlperf_per_dphtotal=200.0), make_offer(54, dlperf_per_dphtotal=100.0)]
    statuses = {51: ["loading", "exited"]}  # the best offer dies: its replica goes on with the next free one
    with VastStandIn(VAST_KEY, offers, statuses, on_create=onstart_player, on_destroy=onstart_player.destroy) as api:
        up = run_cli(api.url, "up", "--replicas", "2", *_SLOW, timeout=300)
        assert up.returncode == 0, up.stderr + onstart_player.logs()

        # Two instances, labelled as replicas, from two different offers; the dead one was replaced alone.
        assert sorted(_rented(api)) == [51, 52, 53]  # never the same offer twice, 54 not needed
        assert sorted(_offer_of(api, i) for i in api.instances) == [52, 53]
        assert sorted(r["label"] for r in api.instances.values()) == ["ai-telephone-1", "ai-telephone-2"]
        assert len(api.calls("DELETE", "/api/v0/instances/")) == 1 and "[ai-telephone-" in up.stderr
        keys = {put.body["env"]["AI_TELEPHONE_API_KEY"] for put in api.calls("PUT", "/api/v0/asks/")}
        assert len(keys) == 1  # one server key for all: the phone sends one

        # The phone's lines: both URLs, one key, and a bundle of both certificates.
        pi = _pi_lines(up.stdout)
        urls = pi["AI_TELEPHONE_SERVER"].split(",")
        assert len(urls) == 2 and len(set(urls)) == 2 and all(u.startswith("https://127.0.0.1:") for u in urls)
        assert pi["AI_TELEPHONE_API_KEY"] == keys.pop()
        assert pi["AI_TELEPHONE__PI__CLIENT__CA_CERT"] == "/etc/ai-telephone/server-cert.pem"
        pems = _CERT.findall(up.stdout)
        assert len(pems) == 2 and all(tls.fingerprint(p.encode()) in up.stdout for p in pems)
        bundle = tmp_path / "bundle.pem"
        bundle.write_text("".join(pems))
        local = Path(deploy_env["XDG_CONFIG_HOME"]) / "ai-telephone/vast/ai-telephone/server-certs.pem"
        assert local.read_text() == bundle.read_text()

        # The Pi's own client, configured by these lines with the bundle as its CA file, talks to both.
        cfg = config_from_dict({}, {k: v for k, v in pi.items() if k != "AI_TELEPHONE__PI__CLIENT__CA_CERT"})
        assert cfg.pi.servers() == tuple(urls)
        client_cfg = dataclasses.replace(cfg.pi.client, ca_cert=str(bundle))
        for url in urls:
            client = ServerClient(url, pi["AI_TELEPHONE_API_KEY"], client_cfg)
            try:
                assert client.health()["status"] == "ok"
                with client.open_reply("Hello, who is this?") as reply:
                    audio = b"".join(reply.audio(threading.Event()))
                assert len(audio) > 2205  # real speech from this server
            finally:
                client.close()
        # Each certificate vouches for its own server only: one alone does not open the other.
        for pem, other in ((pems[0], urls[1]), (pems[1], urls[0])):
            alone = tmp_path / "alone.pem"
            alone.write_text(pem)
            with pytest.raises(requests.exceptions.SSLError):
                requests.get(f"{other}/health", verify=str(alone), timeout=10)

        # scripts/install-pi takes the block as it is: both servers, the bundle as the pinned file.
        up_file = tmp_path / "up.txt"
        up_file.write_text(up.stdout)
        installed = pi_scratch.run(str(up_file))
        assert installed.returncode == 0, installed.stderr
        assert (pi_scratch.root / "etc/ai-telephone/server-cert.pem").read_text() == bundle.read_text()
        pi_env = (pi_scratch.root / "etc/ai-telephone/pi.env").read_text()
        assert f"AI_TELEPHONE_SERVER={pi['AI_TELEPHONE_SERVER']}\n" in pi_env
        assert "2 servers" in installed.stdout

        # Again with 2: both reused, nothing rented.
        again = run_cli(api.url, "up", "--replicas", "2", *_SLOW, timeout=120)
        assert again.returncode == 0, again.stderr
        assert _pi_lines(again.stdout) == pi and again.stderr.count("reusing it") == 2
        assert len(_rented(api)) == 3

        status = run_cli(api.url, "status")
        assert status.returncode == 0
        for label, url in zip(("ai-telephone-1", "ai-telephone-2"), urls, strict=True):
            assert re.search(rf"^{label}: instance \d+ running RTX 4090 \$0\.420/h {url} health: status ok",
                             status.stdout, re.M), status.stdout

        # With 3: the two kept, one more rented from the next offer.
        grown = run_cli(api.url, "up", "--replicas", "3", *_SLOW, timeout=300)
        assert grown.returncode == 0, grown.stderr + onstart_player.logs()
        assert _rented(api)[3:] == [54]
        three = _pi_lines(grown.stdout)["AI_TELEPHONE_SERVER"].split(",")
        assert three[:2] == urls and len(set(three)) == 3
        assert len(_CERT.findall(grown.stdout)) == 3 and _CERT.findall(grown.stdout)[:2] == pems

        # down asks once for the whole group; no keeps all three, --yes destroys them.
        kept = run_cli(api.url, "down", stdin="n\n")
        assert kept.returncode == 0 and "Destroy 3 instances:" in kept.stdout
        assert kept.stdout.count("kept instance") == 3 and len(api.instances) == 3
        down = run_cli(api.url, "down", "--yes")
        assert down.returncode == 0 and down.stdout.count("destroyed instance") == 3
        assert api.instances == {} and not onstart_player.procs
        assert not local.exists()
        assert not list((local.parent.parent).glob("ai-telephone-*/server-key.pem"))


def test_a_replica_that_fails_leaves_the_healthy_one_printed_and_the_next_up_rents_only_it(
    run_cli: RunCli, onstart_player: OnstartPlayer
) -> None:
    onstart_player.own_ports = True
    offers = [make_offer(61, dlperf_per_dphtotal=300.0), make_offer(62, dlperf_per_dphtotal=200.0)]
    with VastStandIn(VAST_KEY, offers, {62: ["loading", "exited"]}, on_create=onstart_player,
                     on_destroy=onstart_player.destroy) as api:
        partial = run_cli(api.url, "up", "--replicas", "2", *_SLOW, "--max-attempts", "1", timeout=300)
        assert partial.returncode == 1, partial.stderr + onstart_player.logs()
        assert "1 of 2 replicas are healthy" in partial.stderr
        (healthy,) = api.instances
        assert _offer_of(api, healthy) == 61
        # What is healthy is printed all the same: the phone can use it while the rest is rented.
        url = _pi_lines(partial.stdout)["AI_TELEPHONE_SERVER"]
        assert "," not in url and len(_CERT.findall(partial.stdout)) == 1

        api.offers.append(make_offer(63, dlperf_per_dphtotal=100.0))
        whole = run_cli(api.url, "up", "--replicas", "2", *_SLOW, timeout=300)
        assert whole.returncode == 0, whole.stderr + onstart_player.logs()
    assert sorted(_rented(api)[:2]) == [61, 62] and _rented(api)[2:] == [63]
    assert healthy in api.instances and whole.stderr.count("reusing it") == 1  # untouched, reused
    urls = _pi_lines(whole.stdout)["AI_TELEPHONE_SERVER"].split(",")
    assert url in urls and len(set(urls)) == 2 and len(_CERT.findall(whole.stdout)) == 2


def test_replicas_that_never_get_healthy_each_try_their_own_offers(run_cli: RunCli) -> None:
    """Two replicas search the same offers at once: neither rents one the other has taken, each gives up
    after its own attempts, and `up` says how many are healthy (none) without printing the Pi's lines."""
    offers = [make_offer(i, dlperf_per_dphtotal=100.0 * i) for i in range(1, 6)]
    statuses = {i: ["loading", "exited"] for i in range(1, 6)}
    with VastStandIn(VAST_KEY, offers, statuses) as api:
        result = run_cli(api.url, "up", "--replicas", "2", *FAST, "--max-attempts", "2")
    assert result.returncode == 1
    rented = _rented(api)
    assert len(rented) == 4 and len(set(rented)) == 4  # not one create refused for a sibling's offer
    assert "0 of 2 replicas are healthy; `up --replicas 2` again keeps the healthy ones" in result.stderr
    assert "Replica ai-telephone-1: 2 offers tried" in result.stderr
    assert "Replica ai-telephone-2: 2 offers tried" in result.stderr
    assert result.stdout == "" and api.instances == {}


def test_replicas_must_be_at_least_one(run_cli: RunCli) -> None:
    with VastStandIn(VAST_KEY, [make_offer(1)]) as api:
        result = run_cli(api.url, "up", "--replicas", "0", *FAST)
    assert result.returncode == 1 and "--replicas 0: expected 1 or more" in result.stderr
    assert not api.calls("PUT", "/api/v0/asks/")


def test_install_pi_refuses_a_block_with_fewer_certificates_than_https_servers(
    pi_scratch: PiScratch, tmp_path: Path
) -> None:
    """A block cut short would leave the phone unable to verify one of its servers: refused before any change."""
    pem = tls.generate("127.0.0.1").cert_pem.decode()
    block = tmp_path / "up.txt"
    block.write_text("AI_TELEPHONE_SERVER=https://127.0.0.1:1001,https://127.0.0.1:1002\n"
                     f"AI_TELEPHONE_API_KEY=k\nAI_TELEPHONE__PI__CLIENT__CA_CERT=/etc/ai-telephone/server-cert.pem\n{pem}")
    result = pi_scratch.run(str(block))
    assert result.returncode == 1
    assert "names 2 https servers but has only 1 certificate(s)" in result.stderr
    assert not pi_scratch.calls() and not (pi_scratch.root / "etc/ai-telephone").exists()
