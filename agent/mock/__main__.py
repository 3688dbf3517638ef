"""``python -m agent.mock``: a mock metadata service in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any, Optional

from agent.mock import flavors

LOG = logging.getLogger("agent.mock")


class _Stop(Exception):
    """Raised from the signal handler to leave the main loop."""


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stop(signum)


def main(argv: Optional[list[str]] = None) -> int:
    """Serve in the foreground until SIGTERM/SIGINT, with the identity paths filled in."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.mock", description="Mock cloud instance metadata service."
    )
    known = flavors()
    parser.add_argument("--flavor", choices=sorted(known), default=next(iter(known)))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-token-required", dest="token_required", action="store_false")
    parser.add_argument("--instance-id")
    parser.add_argument("--region")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    mock = known[args.flavor]
    server = mock.make_server(host=args.host, port=args.port, token_required=args.token_required)
    identity = {k: v for k, v in (("instance_id", args.instance_id), ("region", args.region)) if v}
    mock.defaults(server, **identity)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        print(f"listening on {server.url}", flush=True)
        while True:
            signal.pause()
    except _Stop:
        LOG.info("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
