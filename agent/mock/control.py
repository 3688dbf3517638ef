"""The mock's out-of-band control API, for scripting it from another process.

* ``PUT /__mock__/path`` ``{"path": "/latest/...", "body": "..." | null, "status": 200}``
* ``PUT /__mock__/fail`` ``{"count": 2, "status": 503, "headers": {"Retry-After": "1"}}``
* ``PUT /__mock__/delay`` ``{"seconds": 1.5}``
* ``PUT /__mock__/expire-tokens``
* ``GET /__mock__/requests`` (the request log as JSON; ``DELETE`` clears it)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from agent.mock.handler import Answer, json_ok, text

if TYPE_CHECKING:
    from agent.mock.server import MockMetadataServer

CONTROL_PREFIX = "/__mock__/"


def control(server: MockMetadataServer, method: str, path: str, raw: bytes) -> Answer:
    """The out-of-band API for scripting the server from another process."""
    action = path[len(CONTROL_PREFIX) :]
    if action == "requests" and method == "GET":
        log = [asdict(r) for r in server.requests]
        return 200, json.dumps(log), "application/json", {}
    if action == "requests" and method == "DELETE":
        server.clear_requests()
        return json_ok()
    if method != "PUT":
        return text(405, "Method Not Allowed")
    try:
        args = json.loads(raw.decode("utf-8") or "{}")
        if action == "path":
            server.set(
                args["path"],
                args.get("body"),
                int(args.get("status", 200)),
                args.get("headers"),
            )
        elif action == "fail":
            server.fail(int(args["count"]), int(args.get("status", 500)), args.get("headers"))
        elif action == "delay":
            server.delay(float(args["seconds"]))
        elif action == "expire-tokens":
            server.expire_tokens()
        else:
            return text(404, "Not Found")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return text(400, f"bad control request: {exc}")
    return json_ok()
