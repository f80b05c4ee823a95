"""`python -m deploy.vastai up|status|down`: parse, build the SDK client and store, run, report."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from deploy.vastai import tls
from deploy.vastai.health import probe, server_url
from deploy.vastai.lifecycle import mapped_port, replica_label
from deploy.vastai.onstart import OnstartError, without_credentials
from deploy.vastai.provision import Deployer, DeployError, Deployment
from deploy.vastai.replicas import OfferClaims, up_replicas
from deploy.vastai.settings import LABEL_DEFAULT, InstancePlan, OfferCriteria, Timing
from deploy.vastai.store import DeployStore, StoreError, default_root

_LOGGER = logging.getLogger(__name__)
PI_CERT_PATH = "/etc/ai-telephone/server-cert.pem"
"""Where scripts/install-pi puts the pinned certificate on the Pi."""


def build_parser() -> argparse.ArgumentParser:
    """Flags are run-mode overrides only; None means the default in settings.py."""
    p = argparse.ArgumentParser(prog="python -m deploy.vastai", description="Run the AI Telephone server on Vast.ai.")
    p.add_argument("--url", default=None, help="Vast.ai API base URL (default: $VAST_URL, else the SDK's)")
    p.add_argument("--label", default=LABEL_DEFAULT, help="instance label that makes `up` idempotent")
    p.add_argument("--state-dir", type=Path, default=None, help="local secrets (default ~/.config/ai-telephone/vast)")
    p.add_argument("--debug", action="store_true", help="log at DEBUG level")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="rent (or reuse) an instance, wait until healthy, print the Pi's settings")
    up.add_argument("--replicas", type=int, default=None, metavar="N",
                    help="N servers at once, labelled LABEL-1..N; a second `up` rents only the missing ones")
    plan, crit, timing = InstancePlan(), OfferCriteria(), Timing()

    def opt(flag: str, dest: str, kind: type, default: object, what: str) -> None:
        # The default shown is read from settings.py, where it lives (the flag itself defaults to None).
        up.add_argument(flag, dest=dest, type=kind, default=None, help=f"{what} (default: {default})")

    up.add_argument("--repo-url", default=None, help="git URL the instance clones (default: this checkout's origin)")
    opt("--ref", "repo_ref", str, plan.repo_ref, "branch or tag to deploy")
    opt("--model", "ollama_model", str, plan.ollama_model, "Ollama model")
    up.add_argument("--chatterbox", dest="chatterbox_model", choices=("standard", "turbo"), default=None,
                    help=f"Chatterbox model (default: {plan.chatterbox_model})")
    opt("--image", "image", str, plan.image, "Docker image with Python 3.11 and CUDA torch 2.6.0")
    opt("--port", "container_port", int, plan.container_port, "server port inside the container")
    up.add_argument("--set", dest="server_settings", action="append", default=None, metavar="server.KEY=VALUE",
                    help="a server setting on the instance, e.g. server.llm.temperature=0.5 (repeatable)")
    opt("--max-price", "max_dollars_per_hour", float, crit.max_dollars_per_hour, "price ceiling, $/hour")
    opt("--min-gpu-ram", "min_gpu_ram_gb", float, crit.min_gpu_ram_gb, "least GPU memory, GB")
    opt("--min-cuda", "min_cuda", float, crit.min_cuda, "least CUDA version of the host driver")
    opt("--min-reliability", "min_reliability", float, crit.min_reliability, "least host reliability, 0-1")
    opt("--disk", "min_disk_gb", float, crit.min_disk_gb, "disk, GB")
    opt("--gpus", "num_gpus", int, crit.num_gpus, "GPUs per instance")
    opt("--min-compute-cap", "min_compute_cap", int, crit.min_compute_cap, "least CUDA compute capability x100")
    opt("--max-compute-cap", "max_compute_cap", int, crit.max_compute_cap,
        "greatest CUDA compute capability x100 (torch 2.6 has no kernels past 9.0)")
    up.add_argument("--exclude-gpu", dest="excluded_gpu_names", action="append", default=None, metavar="NAME",
                    help="GPU name prefix never rented; repeatable, replaces the default list "
                         f"({', '.join(crit.excluded_gpu_names)})")
    opt("--min-inet-down", "min_inet_down_mbps", float, crit.min_inet_down_mbps, "least download speed, Mbit/s")
    opt("--min-cpu-ghz", "min_cpu_ghz", float, crit.min_cpu_ghz, "least host CPU clock, GHz (speech token loop)")
    opt("--min-direct-ports", "min_direct_ports", int, crit.min_direct_ports, "least directly mapped ports")
    opt("--offer-limit", "limit", int, crit.limit, "offers fetched per search")
    opt("--order", "order", str, crit.order, "offer field ranked best first (dph_total: cheapest first)")
    opt("--max-attempts", "max_attempts", int, timing.max_attempts, "offers rented before giving up")
    opt("--start-timeout", "start_timeout_seconds", float, timing.start_timeout_seconds, "wait for running, s")
    opt("--health-timeout", "health_timeout_seconds", float, timing.health_timeout_seconds, "wait for /health ok, s")
    opt("--poll", "poll_seconds", float, timing.poll_seconds, "between polls, s")
    opt("--degraded-grace", "degraded_grace_seconds", float, timing.degraded_grace_seconds,
        "a server degraded this long counts as failed, s")
    up.add_argument("--accept-degraded", action="store_true", help="accept /health status degraded")
    sub.add_parser("status", help="show the labelled instance (and its replicas) and their health")
    down = sub.add_parser("down", help="destroy the labelled instance (and its replicas)")
    down.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    return p


def _override(obj: Any, args: argparse.Namespace) -> Any:
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    changes = {n: tuple(v) if isinstance(v, list) else v for n, v in changes.items()}
    return dataclasses.replace(obj, **changes)


def default_repo_url(cwd: Path) -> str:
    """This checkout's `origin` as an https URL the instance can clone without keys."""
    try:
        url = subprocess.run(["git", "-C", str(cwd), "remote", "get-url", "origin"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        raise DeployError("no git remote `origin` here: pass --repo-url (a public https git URL)") from err
    if without_credentials(url) != url:
        _LOGGER.warning("origin %s carries credentials: the instance clones it without them",
                        without_credentials(url))
        url = without_credentials(url)
    ssh = re.match(r"^(?:ssh://)?git@([^:/]+)[:/](.+)$", url)
    if ssh:
        url = f"https://{ssh.group(1)}/{ssh.group(2)}"
    if not url.startswith("https://"):
        raise DeployError(f"origin {url!r} is not an https URL the instance can clone: pass --repo-url")
    return url


def make_client(url: str | None) -> Any:
    """The official SDK client; the API key comes from VAST_API_KEY or the vastai CLI's key file."""
    from vastai import VastAI

    try:
        return VastAI(api_key=None, server_url=url or os.environ.get("VAST_URL") or None, retry=3, quiet=True)
    except RuntimeError as err:
        raise DeployError(
            "no Vast.ai API key: set VAST_API_KEY or run `vastai set api-key KEY` "
            "(it is kept in ~/.config/vastai/vast_api_key)"
        ) from err


def pi_settings(deployments: Sequence[Deployment], local_cert: Path) -> str:
    """The block printed for the Pi: env lines for /etc/ai-telephone/pi.env, then the pinned PEM(s).

    Several servers go in one comma-separated AI_TELEPHONE_SERVER and their certificates in one CA
    bundle (the phone's HTTPS client trusts each certificate in the file for the address it names).
    """
    if len(deployments) == 1:
        (d,) = deployments
        head = (f"# AI Telephone server: Vast.ai instance {d.instance_id}, {d.health}\n"
                f"# Pinned certificate SHA-256 {tls.fingerprint(d.cert_pem)} (local copy: {local_cert})\n")
    else:
        head = f"# AI Telephone servers: {len(deployments)} Vast.ai instances (certificates: {local_cert})\n"
        head += "".join(f"# instance {d.instance_id} {d.url}, {d.health}, "
                        f"certificate SHA-256 {tls.fingerprint(d.cert_pem)}\n" for d in deployments)
    return (
        head + "# On the Pi: save this whole block to a file and run `sudo scripts/install-pi FILE`.\n"
        f"AI_TELEPHONE_SERVER={','.join(d.url for d in deployments)}\n"
        f"AI_TELEPHONE_API_KEY={deployments[0].api_key}\n"
        f"AI_TELEPHONE__PI__CLIENT__CA_CERT={PI_CERT_PATH}\n"
        f"# {PI_CERT_PATH}{' (one certificate per server)' if len(deployments) > 1 else ''}:\n"
        + "".join(d.cert_pem.decode("ascii") for d in deployments)
    )


ForLabel = Callable[[str], Deployer]
"""The Deployer (store, plan) of one label of the group: the group's own or a replica's."""


def _status(deployer: Deployer, for_label: ForLabel, out: TextIO) -> int:
    live, dead = deployer.group()
    if not live and not dead:
        out.write(f"no instance labelled {deployer.plan.label}\n")
        return 0
    for row in sorted(live, key=_label_order) + dead:
        one = for_label(str(row.get("label")))
        line = "{}: instance {} {} {} ${:.3f}/h".format(row.get("label"), row.get("id"), row.get("actual_status"),
                                                         row.get("gpu_name"), float(row.get("dph_total") or 0))
        port, ip = mapped_port(row, one.container_port(int(row["id"]))), row.get("public_ipaddr")
        if row in live and ip and port:
            url = server_url(str(ip), port)
            if one.store.cert_path.is_file():
                key = one.store.api_key() if one.store.api_key_path.is_file() else None
                line += f" {url} health: {probe(url, one.store.cert_path, api_key=key).summary}"
            else:
                line += f" {url} (no local certificate)"
        out.write(line + "\n")
    return 0


def _label_order(row: Mapping[str, Any]) -> tuple[int, str]:
    """The plain label first, then the replicas by number (label-2 before label-10)."""
    label = str(row.get("label"))
    return len(label), label


def _down(deployer: Deployer, for_label: ForLabel, assume_yes: bool, out: TextIO, answer: TextIO) -> int:
    live, dead = deployer.group()
    rows = sorted(live + dead, key=_label_order)
    if not rows:
        out.write(f"no instance labelled {deployer.plan.label}\n")
        return 0
    if not assume_yes:
        what = [f"{r.get('id')} ({r.get('label')}, {r.get('gpu_name')}, {r.get('actual_status')})" for r in rows]
        out.write(f"Destroy instance {what[0]}? [y/N] " if len(rows) == 1
                  else f"Destroy {len(rows)} instances: {', '.join(what)}? [y/N] ")
        out.flush()
        if answer.readline().strip().lower() not in ("y", "yes"):
            out.write("".join(f"kept instance {row.get('id')}\n" for row in rows))
            return 0
    for row in rows:
        deployer.destroy(int(row["id"]))
        for_label(str(row.get("label"))).store.forget_instance()
        out.write(f"destroyed instance {row.get('id')}\n")
    deployer.store.bundle_path.unlink(missing_ok=True)
    return 0


def _up_group(deployer: Deployer, for_label: Callable[[str, OfferClaims, Callable[[float], None]], Deployer],
              replicas: int, repo_url: str, out: TextIO) -> int:
    """Bring up replicas 1..N side by side; print the Pi's lines for every healthy one."""
    labels = [replica_label(deployer.plan.label, i) for i in range(1, replicas + 1)]
    deployer.store.api_key()  # made once here, before the replicas share it
    live, _ = deployer.group()
    outside = sorted({str(r.get("label")) for r in live} - set(labels))
    if outside:
        _LOGGER.warning("Also running, not among the %d replicas asked for: %s (`down` destroys the whole group)",
                        replicas, ", ".join(outside))
    results = up_replicas(labels, for_label, repo_url)
    healthy = [r.deployment for r in results if r.deployment is not None]
    if healthy:
        deployer.store.save_bundle([d.cert_pem for d in healthy])
        out.write(pi_settings(healthy, deployer.store.bundle_path))
    failed = [r for r in results if r.deployment is None]
    for r in failed:
        _LOGGER.error("Replica %s: %s", r.label, r.error)
    if failed:
        raise DeployError(f"{len(healthy)} of {replicas} replicas are healthy; `up --replicas {replicas}` again "
                          "keeps the healthy ones and rents the rest")
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point; exit status 0 on success, 1 with one clear line on error."""
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    replicas = getattr(args, "replicas", None)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: " + ("[%(threadName)s] " if replicas else "")
                        + "%(message)s")
    deployer: Deployer | None = None
    try:
        if replicas is not None and replicas < 1:
            raise DeployError(f"--replicas {replicas}: expected 1 or more")
        root = args.state_dir or default_root(env)
        plan = _override(InstancePlan(label=args.label), args)
        criteria, timing = _override(OfferCriteria(), args), _override(Timing(), args)

        vast = make_client(args.url)

        def for_label(label: str, claims: OfferClaims | None = None, sleep: Callable[[float], None] = time.sleep,
                      ) -> Deployer:
            # A replica thread (claims given) gets an SDK client of its own, with the same Vast key;
            # every label of the group uses the group's server API key.
            return Deployer(vast if claims is None else make_client(args.url),
                            DeployStore(root, label, key_label=args.label), criteria,
                            dataclasses.replace(plan, label=label), timing,
                            accept_degraded=getattr(args, "accept_degraded", False), sleep=sleep,
                            claim=claims or (lambda offer: True))

        deployer = for_label(args.label)
        if args.command == "status":
            return _status(deployer, for_label, sys.stdout)
        if args.command == "down":
            return _down(deployer, for_label, args.yes, sys.stdout, sys.stdin)
        repo_url = args.repo_url or plan.repo_url or default_repo_url(Path.cwd())
        if replicas is not None:
            return _up_group(deployer, for_label, replicas, repo_url, sys.stdout)
        deployment = deployer.up(repo_url)
        sys.stdout.write(pi_settings([deployment], deployer.store.cert_path))
        return 0
    except (DeployError, StoreError, OnstartError) as err:
        _LOGGER.error("%s", err)
        return 1
    except KeyboardInterrupt:
        if replicas is not None:
            _LOGGER.warning("Interrupted: the replicas are left as they are; `python -m deploy.vastai down` "
                            "destroys them")
            return 130
        saved = deployer.store.load_instance() if deployer else None
        if saved:
            _LOGGER.warning("Interrupted: instance %s is left as it is; `python -m deploy.vastai down` destroys it",
                            saved.get("id"))
        return 130
