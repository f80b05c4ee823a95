"""Rent, watch, reuse and destroy the labelled instance through the official ``vastai`` SDK."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from deploy.vastai import offers as offer_logic
from deploy.vastai import tls
from deploy.vastai.health import probe, server_url
from deploy.vastai.lifecycle import Phase, assess, degraded_too_long, split_group, split_labelled
from deploy.vastai.onstart import override_env, render
from deploy.vastai.settings import InstancePlan, OfferCriteria, Timing
from deploy.vastai.store import DeployStore

_LOGGER = logging.getLogger(__name__)


class DeployError(RuntimeError):
    """`up`, `status` or `down` cannot go on; the message says what to change."""


class OfferGone(RuntimeError):
    """The offer was taken between search and create; the next one is tried (it costs nothing)."""


class InstanceFailed(RuntimeError):
    """One instance will not become healthy; `up` destroys it and tries the next offer."""


@dataclass(frozen=True)
class Deployment:
    """A healthy server and what the Pi needs to reach it."""

    instance_id: int
    url: str
    api_key: str
    cert_pem: bytes
    health: str


def _deploy_error(what: str, err: requests.RequestException) -> DeployError:
    """A DeployError naming the SDK call and, for an HTTP failure, the status and the API's own words."""
    reply = err.response if isinstance(err, requests.HTTPError) else None
    if reply is None:
        return DeployError(f"Vast.ai {what} failed: {err.__class__.__name__}: cannot reach the API")
    try:
        body = reply.json()
        detail = str(body.get("msg") or body.get("error") or "") if isinstance(body, dict) else ""
    except ValueError:
        detail = reply.text[:200]
    hint = " (check VAST_API_KEY or `vastai set api-key`)" if reply.status_code in (401, 403) else ""
    return DeployError(f"Vast.ai {what} failed: HTTP {reply.status_code} {detail}{hint}".rstrip())


def _api_call(what: str, call: Callable[[], Any]) -> Any:
    """Run one SDK call; a failure becomes a DeployError (see :func:`_deploy_error`)."""
    try:
        return call()
    except requests.RequestException as err:
        raise _deploy_error(what, err) from err


class Deployer:
    """`up`/`status`/`down` for one label, with the SDK client, local store and clock passed in."""

    def __init__(
        self,
        vast: Any,
        store: DeployStore,
        criteria: OfferCriteria,
        plan: InstancePlan,
        timing: Timing,
        accept_degraded: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        claim: Callable[[Mapping[str, Any]], bool] = lambda offer: True,
    ) -> None:
        self.vast = vast
        self.store = store
        self.criteria = criteria
        self.plan = plan
        self.timing = timing
        self.accept_degraded = accept_degraded
        self._sleep = sleep
        self._now = monotonic
        self._claim = claim
        """Whether this deployer may rent an offer: False when a sibling replica already took it."""

    # ------------------------------------------------------------------ queries

    def labelled(self) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """Our instances as (live, dead)."""
        rows = _api_call("show instances", self.vast.show_instances)
        return split_labelled(list(rows or []), self.plan.label)

    def group(self) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """Our instances and those of our replicas (``label-1``, ``label-2``...) as (live, dead)."""
        rows = _api_call("show instances", self.vast.show_instances)
        return split_group(list(rows or []), self.plan.label)

    def record(self, instance_id: int) -> Mapping[str, Any] | None:
        """One instance's record, None once it is gone."""
        try:
            return self.vast.show_instance(instance_id)  # type: ignore[no-any-return]
        except requests.HTTPError as err:
            if err.response is not None and err.response.status_code == 404:
                return None
            status = err.response.status_code if err.response is not None else "?"
            raise DeployError(f"Vast.ai show instance {instance_id} failed: HTTP {status}") from err
        except requests.RequestException as err:
            raise DeployError(f"Vast.ai show instance {instance_id} failed: {err.__class__.__name__}") from err

    def container_port(self, instance_id: int) -> int:
        """The port the server listens on inside this instance: as created (kept locally), else the plan's."""
        saved = self.store.load_instance()
        if saved and saved.get("id") == instance_id and isinstance(saved.get("container_port"), int):
            return int(saved["container_port"])
        return self.plan.container_port

    def destroy(self, instance_id: int) -> None:
        """Destroy one instance (billing stops); one that is already gone counts as destroyed."""
        try:
            self.vast.destroy_instance(instance_id)
        except requests.HTTPError as err:
            if err.response is None or err.response.status_code != 404:
                raise _deploy_error(f"destroy instance {instance_id} (destroy it in the Vast.ai console)", err) from err
            _LOGGER.info("Instance %s was already gone", instance_id)
            return
        except requests.RequestException as err:
            raise _deploy_error(f"destroy instance {instance_id} (destroy it in the Vast.ai console)", err) from err
        _LOGGER.info("Destroyed instance %s", instance_id)

    # ------------------------------------------------------------------ up

    def up(self, repo_url: str) -> Deployment:
        """A healthy server: the labelled one if it runs, else the best offers tried in turn."""
        user = _api_call("account check", self.vast.show_user)
        _LOGGER.info("Vast.ai account ok (credit %s)", user.get("credit", "?") if isinstance(user, dict) else "?")
        api_key = self.store.api_key()
        live, dead = self.labelled()
        for row in dead:
            _LOGGER.warning("Instance %s labelled %s is %s: destroying it", row.get("id"), self.plan.label,
                            row.get("actual_status"))
            self.destroy(int(row["id"]))
        if live:
            return self._reuse(live, api_key)
        script = render(self.plan, repo_url)
        override_env(self.plan.server_settings)  # refuse a bad --set before renting anything
        found = _api_call("search offers", lambda: self.vast.search_offers(
            query=offer_logic.search_query(self.criteria), order=offer_logic.api_order(self.criteria),
            limit=self.criteria.limit, storage=self.criteria.min_disk_gb,
        ))
        ranked = offer_logic.rank(found or [], self.criteria)
        _LOGGER.info("%d offers returned, %d usable", len(found or []), len(ranked))
        if not ranked:
            c = self.criteria
            raise DeployError(
                f"no Vast.ai offer matches: {c.num_gpus} GPU with >= {c.min_gpu_ram_gb:g} GB, CUDA >= {c.min_cuda:g}, "
                f"compute capability {c.min_compute_cap / 100:g}-{c.max_compute_cap / 100:g}, reliability >= "
                f"{c.min_reliability:g}, <= ${c.max_dollars_per_hour:g}/h; raise --max-price or relax the filters"
            )
        attempts = 0
        for offer in ranked:
            if attempts >= self.timing.max_attempts:
                break
            if not self._claim(offer):
                _LOGGER.info("Offer %s is taken by another replica; trying the next", offer["id"])
                continue
            _LOGGER.info("Attempt %d/%d: renting %s", attempts + 1, self.timing.max_attempts,
                         offer_logic.describe(offer))
            cert = tls.generate(str(offer["public_ipaddr"]))
            self.store.save_cert(cert)
            try:
                instance_id = self._create(offer, api_key, cert, script)
            except OfferGone as err:
                _LOGGER.warning("%s; trying the next offer", err)
                continue
            attempts += 1
            try:
                return self._await(instance_id, api_key, cert)
            except InstanceFailed as err:
                _LOGGER.warning("Instance %s failed: %s; destroying it", instance_id, err)
                self.destroy(instance_id)
                self.store.forget_instance()
        if not attempts:
            raise DeployError("every matching offer was taken before it could be rented; run `up` again")
        raise DeployError(f"{attempts} offer{'s' if attempts > 1 else ''} tried, none became healthy")

    def _create(self, offer: Mapping[str, Any], api_key: str, cert: tls.ServerCert, script: str) -> int:
        env = {
            f"-p {self.plan.container_port}:{self.plan.container_port}": "1",
            "AI_TELEPHONE_API_KEY": api_key,
            "AI_TELEPHONE_TLS_CERT_B64": base64.b64encode(cert.cert_pem).decode("ascii"),
            "AI_TELEPHONE_TLS_KEY_B64": base64.b64encode(cert.key_pem).decode("ascii"),
            **override_env(self.plan.server_settings),
        }
        try:
            reply = self.vast.create_instance(
                id=int(offer["id"]), image=self.plan.image, disk=self.criteria.min_disk_gb, env=env,
                label=self.plan.label, onstart_cmd=script, ssh=True, direct=True, cancel_unavail=True,
            )
        except requests.RequestException as err:
            status = err.response.status_code if isinstance(err, requests.HTTPError) and err.response is not None else 0
            if status in (400, 404, 409, 410):  # no such ask / already rented / not available
                raise OfferGone(f"offer {offer['id']} is no longer available (HTTP {status})") from err
            raise _deploy_error("create instance", err) from err
        if not isinstance(reply, dict) or not reply.get("success") or not reply.get("new_contract"):
            detail = (reply.get("msg") or reply.get("error")) if isinstance(reply, dict) else reply
            raise OfferGone(f"Vast.ai did not create an instance from offer {offer['id']}: {detail}")
        instance_id = int(reply["new_contract"])
        self.store.save_instance({"id": instance_id, "offer": offer["id"], "ip": offer["public_ipaddr"],
                                  "label": self.plan.label, "container_port": self.plan.container_port})
        _LOGGER.info("Created instance %s from offer %s", instance_id, offer["id"])
        return instance_id

    def _reuse(self, live: list[Mapping[str, Any]], api_key: str) -> Deployment:
        row = max(live, key=lambda r: r.get("start_date") or 0)
        if len(live) > 1:
            _LOGGER.warning("%d instances are labelled %s; using the newest, %s (`down` destroys them all)",
                            len(live), self.plan.label, row.get("id"))
        saved = self.store.load_instance()
        if not saved or saved.get("id") != row.get("id") or not self.store.cert_path.is_file():
            raise DeployError(
                f"instance {row.get('id')} labelled {self.plan.label} exists, but its certificate is not in "
                f"{self.store.dir}; run `python -m deploy.vastai down` and `up` again"
            )
        _LOGGER.info("Instance %s labelled %s already exists (%s): reusing it", row.get("id"), self.plan.label,
                     row.get("actual_status"))
        try:
            return self._await(int(row["id"]), api_key, self.store.load_cert())
        except InstanceFailed as err:
            raise DeployError(f"instance {row.get('id')} is not healthy: {err}; `down` destroys it") from err

    def _await(self, instance_id: int, api_key: str, cert: tls.ServerCert) -> Deployment:
        """Wait for running, then for a healthy /health; InstanceFailed on death or timeout."""
        start = self._now()
        shown: tuple[str, float] = ("", -1e9)
        while True:
            a = assess(self.record(instance_id), self.container_port(instance_id), self._now() - start,
                       self.timing.start_timeout_seconds)
            shown = self._progress(instance_id, a.reason, shown, start)
            if a.phase is Phase.RUNNING:
                break
            if a.phase in (Phase.FAILED, Phase.TIMED_OUT):
                raise InstanceFailed(a.reason)
            self._sleep(self.timing.poll_seconds)
        assert a.ip is not None and a.port is not None
        if a.ip not in tls.ip_addresses(cert.cert_pem):
            raise InstanceFailed(f"its address {a.ip} is not the offer's, so the certificate does not name it")
        url = server_url(a.ip, a.port)
        _LOGGER.info("Instance %s is running at %s; waiting for the server to install and start", instance_id, url)
        start = self._now()
        degraded_since: float | None = None
        while True:
            health = probe(url, self.store.cert_path, api_key=self.store.api_key())
            shown = self._progress(instance_id, f"health: {health.summary}", shown, start)
            if health.ready(self.accept_degraded):
                _LOGGER.info("Server on instance %s is healthy (%s)", instance_id, health.summary)
                return Deployment(instance_id, url, api_key, cert.cert_pem, health.summary)
            now = self._now()
            degraded_since = (degraded_since or now) if health.state == "degraded" else None
            if degraded_too_long(degraded_since, now, self.timing.degraded_grace_seconds):
                raise InstanceFailed(f"the server stays degraded ({health.summary}); --accept-degraded takes it so")
            if now - start >= self.timing.health_timeout_seconds:
                raise InstanceFailed(f"no healthy /health after {now - start:.0f} s (last: {health.summary})")
            again = assess(self.record(instance_id), self.container_port(instance_id), 0.0, 1.0)
            if again.phase is Phase.FAILED:
                raise InstanceFailed(again.reason)
            self._sleep(self.timing.poll_seconds)

    def _progress(self, instance_id: int, what: str, shown: tuple[str, float], start: float) -> tuple[str, float]:
        """Log a state when it changes, and again every ``progress_seconds`` while it does not."""
        now = self._now()
        if what != shown[0] or now - shown[1] >= self.timing.progress_seconds:
            _LOGGER.info("Instance %s: %s (%.0f s)", instance_id, what, now - start)
            return what, now
        return shown
