"""A local Alibaba Cloud SLB (CLB) API for the real aliyun SDK, signature checked like ECS.

The signature, key, token, nonce and timestamp checks and the fault queue are the ECS
fake's (:mod:`tests.fakes.ecs_api`); this answers the SLB API's backend-server calls
(version 2014-05-15) with the documented shapes: ``DescribeLoadBalancerAttribute`` lists
``BackendServers.BackendServer[]`` (``ServerId``, ``Weight``, ``Type``);
``SetBackendServers``, ``AddBackendServers`` and ``RemoveBackendServers`` take
``BackendServers`` as a JSON list and change them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.fakes.ecs_api import EcsApiServer, _error

VERSION = "2014-05-15"


class SlbApiServer(EcsApiServer):
    version = VERSION

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._lbs: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}

    def add_load_balancer(self, lb: str, region: str = "cn-hangzhou") -> None:
        with self._cond:
            self._lbs[lb] = (region, {})

    def set_backend(self, lb: str, server: str, weight: int = 100, kind: str = "ecs") -> None:
        with self._cond:
            self._lbs[lb][1][server] = {"ServerId": server, "Weight": weight, "Type": kind}

    def backends(self, lb: str) -> dict[str, int]:
        """Server id -> weight, as the load balancer has them now."""
        with self._cond:
            return {s: b["Weight"] for s, b in self._lbs[lb][1].items()}

    def actions(self) -> list[str]:
        """The actions of the well-signed requests answered, in order."""
        return [r.params.get("Action", "?") for r in self.requests]

    def dispatch(self, params: dict[str, str]) -> tuple[int, Any]:
        action = params["Action"]
        lb = params.get("LoadBalancerId", "")
        with self._cond:
            found = self._lbs.get(lb)
            if found is None or found[0] != params.get("RegionId"):
                return 400, _error(
                    "InvalidLoadBalancerId.NotFound",
                    f"The specified LoadBalancerId {lb} does not exist.",
                )
            servers = found[1]
            if action == "DescribeLoadBalancerAttribute":
                return 200, {
                    "RequestId": str(uuid.uuid4()).upper(),
                    "LoadBalancerId": lb,
                    "LoadBalancerStatus": "active",
                    "RegionId": found[0],
                    "BackendServers": {"BackendServer": [dict(s) for s in servers.values()]},
                }
            if action not in ("SetBackendServers", "AddBackendServers", "RemoveBackendServers"):
                return 404, _error("InvalidAction.NotFound", f"{action} is not faked here")
            try:
                given = json.loads(params.get("BackendServers", ""))
                items = [
                    (str(b["ServerId"]), int(b.get("Weight", 100)), b.get("Type", "ecs"))
                    for b in given
                ]
            except (ValueError, TypeError, KeyError):
                return 400, _error("InvalidParameter", "BackendServers is not valid JSON")
            for server, weight, kind in items:
                if action == "RemoveBackendServers":
                    servers.pop(server, None)
                elif action == "SetBackendServers" and server not in servers:
                    return 400, _error("BackendServer.configuring", f"{server} is not a backend")
                else:
                    servers[server] = {"ServerId": server, "Weight": weight, "Type": kind}
            return 200, {
                "RequestId": str(uuid.uuid4()).upper(),
                "LoadBalancerId": lb,
                "BackendServers": {"BackendServer": [dict(s) for s in servers.values()]},
            }
