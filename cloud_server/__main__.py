"""``python -m cloud_server``: one process, for development and the offline demo (production: gunicorn)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from common.config import ConfigError, load_config

_LOGGER = logging.getLogger("cloud_server")


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load config, serve until interrupted."""
    # Chatterbox draws a tqdm bar per speech token; tqdm reads this once, at its first import.
    os.environ.setdefault("TQDM_DISABLE", "1")
    parser = argparse.ArgumentParser(prog="python -m cloud_server", description=__doc__)
    parser.add_argument("command", nargs="?", choices=("serve", "check"), default="serve",
                        help="serve (default), or check the config, key and storage without serving")
    parser.add_argument("--config", default=None, help="config.yaml path (default: $AI_TELEPHONE_CONFIG)")
    parser.add_argument("--host", default=None, help="address to bind (default: server.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: server.port)")
    parser.add_argument("--certfile", default=None, help="TLS certificate (PEM) to serve HTTPS")
    parser.add_argument("--keyfile", default=None, help="TLS private key (PEM)")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    args = parser.parse_args(argv)
    quiet = args.command == "check" and not args.debug  # check: its own lines only
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "check":
        return check(args.config)
    try:
        config = load_config(args.config)
        from werkzeug.serving import make_server

        from cloud_server import create_app

        app = create_app(config)
        host = args.host or config.server.host
        port = config.server.port if args.port is None else args.port
        ssl_context = (args.certfile, args.keyfile) if args.certfile and args.keyfile else None
        server = make_server(host, port, app, threaded=True, ssl_context=ssl_context)
    except ConfigError as err:
        print(f"cloud_server: {err}", file=sys.stderr)
        return 1
    scheme = "https" if ssl_context else "http"
    _LOGGER.info("Listening on %s://%s:%d", scheme, host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def check(config_path: str | None) -> int:
    """Print one line per problem (stderr) or what was verified (stdout); 1 when anything is wrong."""
    from cloud_server.check import problems

    fine, wrong = problems(config_path)
    for line in fine:
        print(f"ok: {line}")
    for line in wrong:
        print(f"cloud_server check: {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
