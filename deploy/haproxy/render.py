"""Render deploy/haproxy/fleet.cfg: one address (HAProxy) in front of several voice servers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

TEMPLATE = Path(__file__).with_name("fleet.cfg")


class FleetConfigError(ValueError):
    """A server URL or a file that HAProxy could not use; the message names it."""


def server_line(index: int, url: str, ca_file: str | None) -> str:
    """One ``server`` line; an https server is verified against its own pinned certificate."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FleetConfigError(f"server {url!r}: expected http://host:port or https://host:port")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    line = f"  server voice{index} {host}:{port}"
    if parts.scheme == "https":
        if not ca_file:
            raise FleetConfigError(f"server {url}: https needs its pinned certificate (--ca-file)")
        line += f" ssl verify required ca-file {ca_file} check-ssl alpn http/1.1"
    return line


def render(
    servers: Sequence[str],
    bind: str,
    ca_files: Sequence[str | None] = (),
    front_pem: str | None = None,
    maxconn: int = 4096,
    check_interval: str = "5s",
) -> str:
    """The configuration text; ``ca_files[i]`` pins server i, ``front_pem`` (cert + key) serves TLS."""
    if not servers:
        raise FleetConfigError("at least one server is needed")
    cas = list(ca_files) + [None] * (len(servers) - len(ca_files))
    lines = [server_line(i + 1, url, cas[i]) for i, url in enumerate(servers)]
    tls = f" ssl crt {front_pem} ssl-min-ver TLSv1.2 alpn http/1.1" if front_pem else ""
    return Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        maxconn=maxconn, bind=bind, tls=tls, check_interval=check_interval, servers="\n".join(lines)
    )
