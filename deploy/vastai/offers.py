"""Offer search: the API filter sent through the SDK, and the pure check and ranking applied after."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from deploy.vastai.settings import OfferCriteria


def search_query(c: OfferCriteria) -> dict[str, dict[str, Any]]:
    """The filter dict the SDK sends to POST /api/v0/bundles/ (units as the API stores them)."""
    return {
        "num_gpus": {"eq": c.num_gpus},
        "gpu_ram": {"gte": c.min_gpu_ram_gb * 1000},  # MB, as the SDK's own query multiplier does
        "cuda_max_good": {"gte": c.min_cuda},
        "compute_cap": {"gte": c.min_compute_cap, "lte": c.max_compute_cap},
        "reliability": {"gte": c.min_reliability},
        "dph_total": {"lte": c.max_dollars_per_hour},
        "disk_space": {"gte": c.min_disk_gb},
        "inet_down": {"gte": c.min_inet_down_mbps},
        "cpu_ghz": {"gte": c.min_cpu_ghz},
        "direct_port_count": {"gte": c.min_direct_ports},
    }


_ALIASES = {"reliability": ("reliability", "reliability2")}


def _num(offer: Mapping[str, Any], key: str) -> float | None:
    value = next((offer[k] for k in _ALIASES.get(key, (key,)) if offer.get(k) is not None), None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def rejection(offer: Mapping[str, Any], c: OfferCriteria) -> str | None:
    """Why ``offer`` cannot run the server, or None when it can (the API filter is not trusted alone)."""
    name = str(offer.get("gpu_name") or "")
    if any(fragment.lower() in name.lower() for fragment in c.excluded_gpu_names):
        return f"GPU {name} is not supported by torch 2.6"
    checks: list[tuple[str, float, str]] = [
        ("num_gpus", c.num_gpus, "eq"),
        ("gpu_ram", c.min_gpu_ram_gb * 1000, "gte"),
        ("cuda_max_good", c.min_cuda, "gte"),
        ("compute_cap", c.min_compute_cap, "gte"),
        ("compute_cap", c.max_compute_cap, "lte"),
        ("reliability", c.min_reliability, "gte"),
        ("dph_total", c.max_dollars_per_hour, "lte"),
        ("disk_space", c.min_disk_gb, "gte"),
        ("inet_down", c.min_inet_down_mbps, "gte"),
        ("cpu_ghz", c.min_cpu_ghz, "gte"),
        ("direct_port_count", c.min_direct_ports, "gte"),
    ]
    for key, limit, op in checks:
        value = _num(offer, key)
        if value is None:
            return f"{key} unknown"
        ok = value == limit if op == "eq" else value >= limit if op == "gte" else value <= limit
        if not ok:
            return f"{key} {value:g} fails {op} {limit:g}"
    arch = str(offer.get("cpu_arch") or "amd64").lower()
    if arch not in ("amd64", "x86_64"):
        return f"CPU architecture {arch} (the image is amd64)"
    try:
        ipaddress.ip_address(str(offer.get("public_ipaddr") or ""))
    except ValueError:
        return "no public IP address (the TLS certificate names it)"
    return None


def _ascending(c: OfferCriteria) -> bool:
    return c.order in ("dph_total", "dph")


def api_order(c: OfferCriteria) -> str:
    """The SDK's order string: the same ranking asked of the API, so its ``limit`` keeps the best."""
    return c.order if _ascending(c) else f"{c.order}-"


def rank(offers: Iterable[Mapping[str, Any]], c: OfferCriteria) -> list[dict[str, Any]]:
    """Offers that pass :func:`rejection`, best first by ``c.order`` (ties: more reliable, cheaper)."""
    usable = [dict(o) for o in offers if rejection(o, c) is None]
    ascending = _ascending(c)

    def key(o: dict[str, Any]) -> tuple[float, float, float]:
        primary = _num(o, c.order) or 0.0
        return (primary if ascending else -primary, -(_num(o, "reliability") or 0.0), _num(o, "dph_total") or 0.0)

    return sorted(usable, key=key)


def describe(offer: Mapping[str, Any]) -> str:
    """One line naming an offer for the log."""
    return "offer {} ({} x{}, {:.0f} GB, ${:.3f}/h, reliability {:.3f}, {})".format(
        offer.get("id"),
        offer.get("gpu_name"),
        offer.get("num_gpus"),
        (_num(offer, "gpu_ram") or 0) / 1000,
        _num(offer, "dph_total") or 0,
        _num(offer, "reliability") or 0,
        offer.get("geolocation") or "unknown location",
    )
