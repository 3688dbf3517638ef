"""Leave the Alibaba Cloud load balancers (CLB, the SLB API) before the hooks run.

For each configured load balancer that has this instance as a backend server: set its
weight to 0 (no new connections; open ones go on), wait ``drain_time`` seconds (at most
until the end of the run), then remove it from the backend servers. On a withdrawal the
instance is added back with the weight it had. Requests go through the aliyun SDK's SLB
package with the credentials, region and error handling of the ECS confirmation.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

from agent.actions import BEFORE, ActionContext, CloudAction, Failed, Retrier
from agent.clock import Clock
from agent.clouds.alibaba import api as ecs_api
from agent.confirmation import Transient, Unusable
from agent.hooks.runner import ERROR, OK, SKIPPED
from agent.notice import TERMINAL_KINDS

LOG = logging.getLogger(__name__)

API = "SLB API"
DEFAULT_WEIGHT = 100
DENIED_PREFIXES = ("Forbidden", "NoPermission", "InvalidAccessKey", "InvalidSecurityToken")
GRANT = (
    "slb:DescribeLoadBalancerAttribute, slb:SetBackendServers, slb:RemoveBackendServers "
    "and slb:AddBackendServers"
)


class Denied(Unusable):
    """No permission (or no usable key): said once, and the action stops."""


class SlbApi(ecs_api.Ecs):
    """The ECS confirmation's client (it signs for any product), sending SLB requests."""

    def __init__(self, config: Any, clock: Clock, endpoint: str) -> None:
        super().__init__(config, clock)
        self._endpoint = endpoint

    def call(self, action: str, **params: str) -> dict[str, Any]:
        try:
            from aliyunsdkslb.request import v20140515 as requests
        except ImportError as exc:
            raise Denied(
                f"the aliyun SDK's SLB package cannot be imported ({exc}): install "
                "aliyun-python-sdk-slb, or preempt-agent[alibaba] with pip"
            ) from None
        client = self.client()
        module = __import__(f"{requests.__name__}.{action}Request", fromlist=["_"])
        request = getattr(module, f"{action}Request")()
        for name, value in params.items():
            getattr(request, f"set_{name}")(value)
        return self.send(client, action, request, self._endpoint)

    def _classify(
        self,
        code: Any,
        message: Any,
        status: Any,
        request_id: Any,
        action: str = "DescribeInstances",
    ) -> Exception:
        """The ECS classification, named for this action; refusals become Denied."""
        exc = super()._classify(code, message, status, request_id, action)
        if not isinstance(exc, Transient) and str(code or "").startswith(DENIED_PREFIXES):
            return Denied(f"{exc} (grant {GRANT})")
        return exc


class SlbAction(CloudAction[SlbApi]):
    name = "alibaba-slb"
    stage = BEFORE
    kinds = TERMINAL_KINDS
    cloud = "alibaba"
    table = "slb"

    def __init__(self, alibaba: Any, settings: Any) -> None:
        super().__init__(alibaba, settings)
        self._weights: dict[str, tuple[int, str]] = {}
        """Load balancer -> (the weight it had, the backend type) before the drain."""

    def describe(self) -> str:
        lbs = ", ".join(self._settings.load_balancers)
        return f"{self.name}: weight 0, then leave {lbs} before the hooks; add back on resume"

    def plan(self, ctx: ActionContext) -> str:
        lbs = ", ".join(self._settings.load_balancers)
        iid = ctx.notice.instance_id
        if ctx.phase == "resume":
            return f"add {iid} back to {lbs} with the weight it had"
        return (
            f"set the weight of {iid} to 0 in {lbs}, wait {self._settings.drain_time:.0f} s, "
            "then remove it from their backend servers"
        )

    @classmethod
    def wanted(cls, settings: Any) -> bool:
        return bool(settings.load_balancers)

    def _connect(self, ctx: ActionContext) -> SlbApi:
        return SlbApi(self._cloud, ctx.clock, self._settings.endpoint)

    def _backend(self, ctx: ActionContext, retry: Retrier, lb: str) -> Optional[dict[str, Any]]:
        api = self.api(ctx)
        data = retry(lambda: api.call("DescribeLoadBalancerAttribute", LoadBalancerId=lb))
        servers = data.get("BackendServers", {}).get("BackendServer", [])
        for server in servers if isinstance(servers, list) else []:
            if isinstance(server, dict) and server.get("ServerId") == ctx.notice.instance_id:
                return server
        return None

    def _set(self, ctx: ActionContext, retry: Retrier, action: str, lb: str, weight: int) -> None:
        api = self.api(ctx)
        kind = self._weights.get(lb, (0, "ecs"))[1]
        servers = json.dumps(
            [{"ServerId": ctx.notice.instance_id, "Weight": str(weight), "Type": kind}]
        )
        retry(lambda: api.call(action, LoadBalancerId=lb, BackendServers=servers))

    def _drain(self, ctx: ActionContext) -> tuple[str, str]:
        retry = Retrier(ctx, API)
        iid = ctx.notice.instance_id
        zeroed: list[str] = []
        errors: list[str] = []
        for lb in self._settings.load_balancers:
            try:
                server = self._backend(ctx, retry, lb)
                if server is None:
                    continue
                weight = int(server.get("Weight", DEFAULT_WEIGHT) or 0)
                if lb not in self._weights or weight > 0:
                    self._weights[lb] = (weight or DEFAULT_WEIGHT, str(server.get("Type") or "ecs"))
                if weight:
                    self._set(ctx, retry, "SetBackendServers", lb, 0)
                    LOG.info("weight of %s set to 0 in %s (was %d)", iid, lb, weight)
                zeroed.append(lb)
            except Denied:
                raise
            except (Failed, Unusable, ValueError) as exc:
                errors.append(f"{lb}: {exc}")
        if not zeroed:
            if errors:
                return ERROR, "; ".join(errors)
            return SKIPPED, f"{iid} is a backend server of none of the load balancers"
        wait = min(float(self._settings.drain_time), ctx.end() - ctx.clock.monotonic())
        if wait > 0 and ctx.clock.wait_for(ctx.cancel, wait):
            return SKIPPED, f"run cancelled while draining {', '.join(zeroed)} at weight 0"
        removed = []
        for lb in zeroed:
            try:
                self._set(ctx, retry, "RemoveBackendServers", lb, 0)
                removed.append(lb)
                LOG.info("%s removed from the backend servers of %s", iid, lb)
            except Denied:
                raise
            except (Failed, Unusable) as exc:
                errors.append(f"{lb}: {exc}")
        detail = (
            f"weight 0 for {max(wait, 0):.0f} s, then removed from {len(removed)} load balancer(s)"
        )
        if errors:
            return ERROR, f"{detail}; failed: {'; '.join(errors)}"
        return OK, detail

    def _resume(self, ctx: ActionContext) -> tuple[str, str]:
        retry = Retrier(ctx, API)
        plan = dict(self._weights) or {
            lb: (DEFAULT_WEIGHT, "ecs") for lb in self._settings.load_balancers
        }
        done, errors = [], []
        for lb, (weight, _) in plan.items():
            try:
                present = self._backend(ctx, retry, lb) is not None
                self._set(
                    ctx, retry, "SetBackendServers" if present else "AddBackendServers", lb, weight
                )
                self._weights.pop(lb, None)
                done.append(f"{lb} (weight {weight})")
                LOG.info(
                    "%s is a backend server of %s again, weight %d",
                    ctx.notice.instance_id,
                    lb,
                    weight,
                )
            except Denied:
                raise
            except (Failed, Unusable) as exc:
                errors.append(f"{lb}: {exc}")
        detail = f"back in {', '.join(done) or 'no load balancer'}"
        if errors:
            return ERROR, f"{detail}; failed: {'; '.join(errors)}"
        return OK, detail
