"""The ``[aws]`` config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from agent.clouds.aws.actions.settings import AsgConfig, ElbConfig
from agent.config import WatcherConfig, http_url, option, positive, ttl_range


@dataclass(frozen=True)
class AwsConfig:
    metadata_url: str = option("http://169.254.169.254", http_url)
    token_ttl: int = option(21600, ttl_range, "IMDSv2 token lifetime, seconds")
    timeout: float = option(2.0, positive, "per-request timeout, seconds")
    max_backoff: float = option(10.0, positive, "longest wait between failing polls")
    endpoint_url: str = option("", http_url, "EC2 API endpoint; empty = AWS's own for the region")
    api_timeout: float = option(10.0, positive, "EC2 API connect and read timeout, seconds")
    spot: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 0.5))
    rebalance: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 5.0))
    maintenance: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 60.0))
    asg: AsgConfig = field(default_factory=partial(AsgConfig, True, 5.0))
    elb: ElbConfig = field(default_factory=ElbConfig)
