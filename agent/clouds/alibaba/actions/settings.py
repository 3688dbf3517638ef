"""The Alibaba action's config table: ``[alibaba.slb]`` (on when a load balancer is listed)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.actions import names
from agent.config import http_url, not_negative, option


@dataclass(frozen=True)
class SlbConfig:
    """``[alibaba.slb]``: leave these load balancers' backend servers before the hooks."""

    load_balancers: tuple[str, ...] = names((), "load balancer ids (lb-...) to leave")
    drain_time: float = option(
        30.0, not_negative, "seconds at weight 0 before leaving the backend servers"
    )
    endpoint: str = option("", http_url, "SLB API endpoint URL; empty = the SDK's for the region")
