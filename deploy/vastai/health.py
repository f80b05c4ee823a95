"""Ask the deployed server's /health over TLS, trusting only the pinned certificate."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import requests

from deploy.vastai.lifecycle import Health, health_verdict

_LOGGER = logging.getLogger(__name__)


def server_url(ip: str, port: int) -> str:
    """``https://IP:PORT`` (brackets for IPv6), the URL the Pi is given."""
    host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    return f"https://{host}:{port}"


def probe(url: str, pinned_cert: Path, timeout: float = 10.0, api_key: str | None = None) -> Health:
    """What ``url``/health says, over TLS verified against ``pinned_cert`` exactly as the Pi verifies.

    With ``api_key`` the server adds its details (LLM reachable, voice engine) to the summary.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        # verify=<the pinned PEM>: the chain must end at that certificate and its IP SAN must match.
        reply = requests.get(f"{url}/health", headers=headers, verify=str(pinned_cert), timeout=(5.0, timeout))
    except requests.exceptions.SSLError as err:
        return Health("down", f"TLS verification against the pinned certificate failed ({err.__class__.__name__})")
    except requests.exceptions.ConnectionError:
        return Health("down", "not answering yet")
    except requests.exceptions.Timeout:
        return Health("down", "timed out")
    if reply.status_code != 200:
        return Health("down", f"HTTP {reply.status_code}")
    try:
        body = reply.json()
    except ValueError:
        return Health("down", "health reply is not JSON")
    return health_verdict(body)
