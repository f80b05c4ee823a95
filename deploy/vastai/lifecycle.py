"""Pure decisions about one rented instance: wait, ready, failed or timed out (no clock, no I/O)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

DEAD_STATES = frozenset({"exited", "unknown", "offline"})
"""`actual_status` values from which an instance never reaches running (Vast.ai's own docs)."""


class Phase(Enum):
    """Where an instance stands, as far as `up` is concerned."""

    WAITING = "waiting"
    RUNNING = "running"
    FAILED = "failed"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Assessment:
    """The decision for one poll: the phase, why, and where the server listens once running."""

    phase: Phase
    reason: str
    ip: str | None = None
    port: int | None = None


def mapped_port(record: Mapping[str, Any], container_port: int) -> int | None:
    """The public port Vast maps to ``container_port``/tcp, from the record's ``ports``."""
    ports = record.get("ports")
    if not isinstance(ports, Mapping):
        return None
    for binding in ports.get(f"{container_port}/tcp") or []:
        if isinstance(binding, Mapping):
            try:
                return int(binding.get("HostPort"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
    return None


def assess(record: Mapping[str, Any] | None, container_port: int, elapsed: float, timeout: float) -> Assessment:
    """Decide what a polled instance record means ``elapsed`` seconds after it was created."""
    if record is None:
        return Assessment(Phase.FAILED, "the instance disappeared")
    status = record.get("actual_status")
    if status in DEAD_STATES:
        msg = str(record.get("status_msg") or "").strip()
        return Assessment(Phase.FAILED, f"status {status}" + (f": {msg}" if msg else ""))
    if status == "running":
        ip = str(record.get("public_ipaddr") or "").strip()
        port = mapped_port(record, container_port)
        if ip and port:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                return Assessment(Phase.FAILED, f"public address {ip!r} is not an IP address")
            return Assessment(Phase.RUNNING, "running", ip, port)
    if elapsed >= timeout:
        return Assessment(Phase.TIMED_OUT, f"still {status or 'provisioning'} after {elapsed:.0f} s")
    detail = "running, waiting for the port mapping" if status == "running" else (status or "provisioning")
    return Assessment(Phase.WAITING, detail)


@dataclass(frozen=True)
class Health:
    """What one /health poll said: ``ok``, ``degraded`` (it answers, with a part failing) or ``down``."""

    state: str
    summary: str

    def ready(self, accept_degraded: bool) -> bool:
        """Whether the server can take calls as far as the maker asked."""
        return self.state == "ok" or (accept_degraded and self.state == "degraded")


def health_verdict(body: Any) -> Health:
    """Read a /health JSON body into a :class:`Health` with a short summary for the log."""
    if not isinstance(body, Mapping):
        return Health("down", "health reply is not a JSON object")
    status = body.get("status")
    llm, tts = body.get("llm"), body.get("tts")
    reachable = llm.get("reachable") if isinstance(llm, Mapping) else None
    engine = tts.get("engine") if isinstance(tts, Mapping) else None
    summary = f"status {status}, llm reachable {reachable}, tts {engine or '?'}"
    return Health(status if status in ("ok", "degraded") else "down", summary)


def degraded_too_long(since: float | None, now: float, grace: float) -> bool:
    """A server that has answered `degraded` for ``grace`` seconds has loaded and will not get better."""
    return since is not None and now - since >= grace


Rows = list[Mapping[str, Any]]


def split_labelled(rows: Rows, label: str) -> tuple[Rows, Rows]:
    """Our labelled instances as (live, dead): live ones are reused, dead ones only cost money."""
    ours = [r for r in rows if r.get("label") == label]
    return (
        [r for r in ours if r.get("actual_status") not in DEAD_STATES],
        [r for r in ours if r.get("actual_status") in DEAD_STATES],
    )


def replica_label(label: str, index: int) -> str:
    """The label of replica ``index`` (from 1) of the group ``label``: ``label-index``."""
    return f"{label}-{index}"


def in_group(row_label: object, label: str) -> bool:
    """Whether an instance's label is ``label`` itself or one of its replicas (``label-1``, ``label-2``...)."""
    return isinstance(row_label, str) and re.fullmatch(re.escape(label) + r"(-[1-9][0-9]*)?", row_label) is not None


def split_group(rows: Rows, label: str) -> tuple[Rows, Rows]:
    """Like :func:`split_labelled`, for the instance labelled ``label`` and all its replicas."""
    ours = [r for r in rows if in_group(r.get("label"), label)]
    return (
        [r for r in ours if r.get("actual_status") not in DEAD_STATES],
        [r for r in ours if r.get("actual_status") in DEAD_STATES],
    )
