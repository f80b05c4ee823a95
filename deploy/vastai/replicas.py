"""`up --replicas N`: N instances side by side, each brought up by its own single-instance Deployer.

Replica ``i`` is labelled ``<label>-i`` and keeps its certificate in its own store, so a second
`up` reuses the healthy ones and rents only the missing; the replicas share one server API key
(the phone sends one) and never rent the same offer (:class:`OfferClaims`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deploy.vastai.onstart import OnstartError
from deploy.vastai.provision import Deployer, DeployError, Deployment
from deploy.vastai.store import StoreError

_LOGGER = logging.getLogger(__name__)
_JOIN_POLL_SECONDS = 0.5
"""How often the main thread looks up from waiting for the replicas (so Ctrl-C reaches it)."""
_STOP_GRACE_SECONDS = 30.0
"""After Ctrl-C, how long each replica may take to reach its next pause and stop."""


class Interrupted(Exception):
    """The maker pressed Ctrl-C: a replica stops at its next pause and leaves its instance as it is."""


class OfferClaims:
    """Offers already taken by one replica, so that siblings ranking the same search try the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[Any] = set()

    def __call__(self, offer: Mapping[str, Any]) -> bool:
        """Take ``offer`` for the caller: False when another replica has it."""
        with self._lock:
            if offer["id"] in self._taken:
                return False
            self._taken.add(offer["id"])
            return True


@dataclass(frozen=True)
class ReplicaResult:
    """How one replica's `up` ended: a healthy deployment, or why not."""

    label: str
    deployment: Deployment | None
    error: str | None = None


BuildDeployer = Callable[[str, OfferClaims, Callable[[float], None]], Deployer]
"""Makes the Deployer of one replica label, with the shared offer claims and an interruptible sleep."""


def up_replicas(labels: Sequence[str], build: BuildDeployer, repo_url: str) -> list[ReplicaResult]:
    """Run each replica's `up` in its own thread; results in the order of ``labels``."""
    claims = OfferClaims()
    stop = threading.Event()
    results: dict[str, ReplicaResult] = {}

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted("interrupted")

    def run(label: str) -> None:
        try:
            results[label] = ReplicaResult(label, build(label, claims, sleep).up(repo_url))
        except (DeployError, StoreError, OnstartError, Interrupted) as err:
            results[label] = ReplicaResult(label, None, str(err))
        except Exception as err:  # one replica's bug must not hide how the others went
            _LOGGER.exception("Replica %s failed unexpectedly", label)
            results[label] = ReplicaResult(label, None, f"{err.__class__.__name__}: {err}")

    threads = [threading.Thread(target=run, args=(label,), name=label, daemon=True) for label in labels]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(_JOIN_POLL_SECONDS)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join(_STOP_GRACE_SECONDS)
        raise
    return [results.get(label, ReplicaResult(label, None, "did not finish")) for label in labels]
