"""``python -m cloud_server.wyoming --uri tcp://0.0.0.0:10200 --server https://IP:PORT``: the Home Assistant bridge."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import sys

from wyoming.server import AsyncServer

from cloud_server.wyoming.handler import BridgeHandler
from cloud_server.wyoming.voice_server import VoiceServer
from common.config import API_KEY_ENV

_LOGGER = logging.getLogger("cloud_server.wyoming")
CA_ENVS = ("AI_TELEPHONE_TLS_CA", "AI_TELEPHONE__PI__CLIENT__CA_CERT")
"""The pinned server certificate: its own variable, or the one the Pi uses."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud_server.wyoming", description=__doc__)
    parser.add_argument("--uri", default="tcp://127.0.0.1:10200", help="where Home Assistant connects")
    parser.add_argument("--server", default=os.environ.get("AI_TELEPHONE_SERVER"),
                        help="the voice server, https://IP:PORT (default: $AI_TELEPHONE_SERVER)")
    parser.add_argument("--ca-cert", default=None, help=f"pinned server certificate (default: ${CA_ENVS[0]})")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.server:
        print("cloud_server.wyoming: no server: pass --server https://IP:PORT", file=sys.stderr)
        return 1
    key = os.environ.get(API_KEY_ENV, "").strip() or None
    if key is None:
        _LOGGER.warning("%s is not set: the voice server will refuse the bridge unless its auth is off", API_KEY_ENV)
    ca_cert = args.ca_cert or next((os.environ[n] for n in CA_ENVS if os.environ.get(n)), None)
    if ca_cert and not os.path.isfile(ca_cert):
        print(f"cloud_server.wyoming: no such certificate file {ca_cert}", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.uri, VoiceServer(args.server, key, ca_cert)))
    return 0


async def _serve(uri: str, voice_server: VoiceServer) -> None:
    server = AsyncServer.from_uri(uri)
    _LOGGER.info("Ready: Wyoming on %s, voice server %s", uri, voice_server.url)
    try:
        await server.run(functools.partial(BridgeHandler, voice_server))
    finally:
        await voice_server.close()


if __name__ == "__main__":
    sys.exit(main())
