"""A local stand-in of the Vast.ai REST API, answering exactly what the official ``vastai`` SDK asks.

Scriptable: offers, per-offer status sequences (each look at an instance advances it one
step), a hook run when an instance is created (a test starts the real server there), and a
record of every request so a test can assert what was sent. Replies are JSON with
``Content-Type: application/json`` like the real API (the SDK's search needs it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_ONSTART = 16 * 1024
_QUERY_KEYS = {"order", "type", "limit", "allocated_storage", "disable_bundling"}


def make_offer(offer_id: int, **fields: Any) -> dict[str, Any]:
    """An offer row shaped like /api/v0/bundles/ output: a good 24 GB GPU unless ``fields`` say otherwise."""
    offer = {
        "id": offer_id, "ask_contract_id": offer_id, "machine_id": 5000 + offer_id, "host_id": 77,
        "num_gpus": 1, "gpu_name": "RTX 4090", "gpu_ram": 24564, "gpu_arch": "nvidia", "compute_cap": 890,
        "cuda_max_good": 12.8, "reliability": 0.995, "dph_total": 0.42, "disk_space": 200.0,
        "inet_down": 900.0, "inet_up": 500.0, "direct_port_count": 40, "dlperf": 80.0, "dlperf_per_dphtotal": 190.0,
        "cpu_arch": "amd64", "public_ipaddr": "127.0.0.1", "geolocation": "Nowhere, XX", "verified": True,
        "cpu_ghz": 4.7, "external": False, "rentable": True, "rented": False, "hosting_type": 0, "score": 100.0,
    }
    offer.update(fields)
    return offer


@dataclass
class Recorded:
    """One request as the stand-in saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


def _matches(value: Any, cond: Any) -> bool:
    if not isinstance(cond, dict):
        return bool(value == cond)
    for op, want in cond.items():
        if value is None:
            return False
        ok = {
            "eq": lambda v, w: v == w, "neq": lambda v, w: v != w, "gt": lambda v, w: v > w,
            "gte": lambda v, w: v >= w, "lt": lambda v, w: v < w, "lte": lambda v, w: v <= w,
            "in": lambda v, w: v in w, "notin": lambda v, w: v not in w,
        }[op](value, want)
        if not ok:
            return False
    return True


@dataclass
class VastStandIn:
    """The API on 127.0.0.1 (port 0); use as a context manager or call start()/stop()."""

    api_key: str
    offers: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[int, list[str]] = field(default_factory=dict)
    """Per offer id: the ``actual_status`` sequence of an instance made from it (default loading, running)."""
    on_create: Callable[[int, dict[str, Any], dict[str, Any]], dict[str, Any] | None] | None = None
    """Called with (instance id, offer, create body); the dict it returns is merged into the record."""
    on_destroy: Callable[[int], None] | None = None
    """Called with the instance id once it is destroyed (a test stops what played the instance)."""
    taken: set[int] = field(default_factory=set)
    """Offer ids that search still lists but create refuses (rented by someone else in between)."""
    credit: float = 25.0
    requests: list[Recorded] = field(default_factory=list)
    instances: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: dict[int, list[str]] = {}
        self._next_id = 31000
        self._server: ThreadingHTTPServer | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> VastStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet test output)
                return

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("latin-1")
                rec = Recorded(self.command, parts.path, parse_qs(parts.query), body, dict(self.headers.items()))
                status, reply = standin._dispatch(rec)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="vast-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> VastStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_instance(self, label: str, status: str = "running", **fields: Any) -> int:
        """Put an instance in the account directly (one rented earlier, by hand or by another `up`)."""
        with self._lock:
            iid = self._next_id
            self._next_id += 1
            self.instances[iid] = {"id": iid, "label": label, "actual_status": status, "gpu_name": "RTX 4090",
                                   "num_gpus": 1, "dph_total": 0.4, "public_ipaddr": "127.0.0.1", "ports": {},
                                   "start_date": time.time(), "extra_env": [], "status_msg": "", **fields}
            self._steps[iid] = [status]
        return iid

    def calls(self, method: str, prefix: str) -> list[Recorded]:
        """Recorded requests with this method whose path starts with ``prefix``."""
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # ----------------------------------------------------------------- the API

    def _dispatch(self, rec: Recorded) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(rec)
        if rec.headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, {"success": False, "error": "invalid_api_key", "msg": "Invalid or missing API key"}
        p = rec.path.rstrip("/").split("/")
        if rec.method == "GET" and rec.path == "/api/v0/users/current":
            return 200, {"id": 4242, "username": "maker", "email": "maker@example.invalid", "credit": self.credit,
                         "api_key": self.api_key}
        if rec.method == "POST" and rec.path == "/api/v0/bundles/":
            return 200, {"offers": self._search(rec.body or {})}
        if rec.method == "PUT" and len(p) == 5 and p[:4] == ["", "api", "v0", "asks"]:
            return self._create(int(p[4]), rec.body or {})
        if rec.method == "GET" and rec.path == "/api/v1/instances/":
            with self._lock:
                rows = [row for i in sorted(self.instances) if (row := self._look(i)) is not None]
            return 200, {"instances": rows, "next_token": None, "total_instances": len(rows)}
        if len(p) == 5 and p[:4] == ["", "api", "v0", "instances"]:
            iid = int(p[4])
            with self._lock:
                if rec.method == "GET":
                    return 200, {"instances": self._look(iid) if iid in self.instances else None}
                if rec.method == "DELETE" and self.instances.pop(iid, None) is None:
                    return 404, {"success": False, "error": "no_such_instance", "msg": f"No instance {iid}"}
            if rec.method == "DELETE":
                if self.on_destroy:
                    self.on_destroy(iid)
                return 200, {"success": True}
        return 404, {"success": False, "error": "not_found", "msg": f"{rec.method} {rec.path} is not in the stand-in"}

    def _search(self, q: dict[str, Any]) -> list[dict[str, Any]]:
        found = [
            dict(o) for o in self.offers
            if all(_matches(o.get(k), cond) for k, cond in q.items() if k not in _QUERY_KEYS)
        ]
        for col, direction in reversed(q.get("order") or []):
            found.sort(key=lambda o, c=col: o.get(c) or 0, reverse=direction == "desc")
        return found[: int(q.get("limit") or len(found) or 1)]

    def _create(self, offer_id: int, body: dict[str, Any]) -> tuple[int, Any]:
        offer = next((o for o in self.offers if o["id"] == offer_id), None)
        if offer is None or offer.get("rented") or offer_id in self.taken:
            return 404, {"success": False, "error": "no_such_ask", "msg": f"Offer {offer_id} is not available"}
        if len(str(body.get("onstart") or "").encode()) > MAX_ONSTART:
            return 400, {"success": False, "error": "invalid_args", "msg": "onstart script too long"}
        with self._lock:
            iid = self._next_id
            self._next_id += 1
            offer["rented"] = True
        env = body.get("env") or {}
        record = {
            "id": iid, "machine_id": offer["machine_id"], "label": body.get("label"), "actual_status": None,
            "intended_status": "running", "cur_state": "running", "image_uuid": body.get("image"),
            "gpu_name": offer["gpu_name"], "num_gpus": offer["num_gpus"], "dph_total": offer["dph_total"],
            "public_ipaddr": offer["public_ipaddr"], "ports": {}, "start_date": time.time(), "status_msg": "",
            "extra_env": [[k, v] for k, v in env.items() if not k.startswith("-")],
            "onstart": body.get("onstart"), "image_runtype": body.get("runtype"), "disk_space": body.get("disk"),
        }
        extra = self.on_create(iid, offer, body) if self.on_create else None
        record.update(extra or {})
        with self._lock:
            self.instances[iid] = record
            self._steps[iid] = list(self.statuses.get(offer_id, ["loading", "running"]))
        return 200, {"success": True, "new_contract": iid}

    def _look(self, iid: int) -> dict[str, Any] | None:
        """The record as the API shows it now; each look advances the scripted status one step.

        The status ``gone`` makes the instance vanish (the host took it back)."""
        record = self.instances[iid]
        steps = self._steps[iid]
        record["actual_status"] = steps.pop(0) if len(steps) > 1 else steps[0]
        if record["actual_status"] == "gone":
            del self.instances[iid]
            return None
        shown = dict(record)
        if record["actual_status"] != "running":
            shown["ports"] = {}
        return shown
