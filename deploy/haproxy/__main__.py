"""``python -m deploy.haproxy --bind :8443 --server URL [--ca-file PEM] ... > fleet.cfg``; ``haproxy -f fleet.cfg``.

One address for a fleet of phones in front of several voice servers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from deploy.haproxy.render import FleetConfigError, render


def main(argv: Sequence[str] | None = None) -> int:
    """Print the fleet configuration; exit 1 with one line when a server is unusable."""
    parser = argparse.ArgumentParser(prog="python -m deploy.haproxy", description=__doc__)
    parser.add_argument("--bind", required=True, help="address the phones call, e.g. :8443 or 0.0.0.0:8000")
    parser.add_argument("--server", action="append", required=True, help="a voice server URL (repeat per server)")
    parser.add_argument(
        "--ca-file", action="append", default=[], help="pinned certificate of each https server, in order"
    )
    parser.add_argument("--front-pem", default=None, help="certificate + key (one PEM) to serve the phones TLS")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(render(args.server, args.bind, args.ca_file, args.front_pem))
    except FleetConfigError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
