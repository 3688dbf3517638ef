"""The ``[alibaba]`` config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from agent.clouds.alibaba.actions.settings import SlbConfig
from agent.config import WatcherConfig, http_url, one_of, option, positive, secret, ttl_range


@dataclass(frozen=True)
class AlibabaConfig:
    metadata_url: str = option("http://100.100.100.200", http_url)
    token_ttl: int = option(21600, ttl_range, "hardened-mode token lifetime, seconds")
    timeout: float = option(2.0, positive, "per-request timeout, seconds")
    max_backoff: float = option(10.0, positive, "longest wait between failing polls")
    interruption_behavior: str = option(
        "terminate",
        one_of("terminate", "stop"),
        "the instance's SpotInterruptionBehavior, told to hooks as the action",
    )
    ecs_endpoint: str = option("", http_url, "ECS API endpoint; empty = the SDK's for the region")
    api_timeout: float = option(10.0, positive, "ECS API connect and read timeout, seconds")
    access_key_id: str = field(
        default="", metadata={"doc": "API key instead of the instance RAM role; empty = role"}
    )
    access_key_secret: str = secret("the secret of access_key_id")
    ram_role: str = field(
        default="", metadata={"doc": "the instance RAM role's name; empty = ask metadata"}
    )
    spot: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 2.0))
    slb: SlbConfig = field(default_factory=SlbConfig)
