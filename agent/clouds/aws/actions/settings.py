"""The AWS actions' config tables: ``[aws.elb]`` and ``[aws.asg]``.

Each cloud's section holds its tables as fields; an action is on when its list or name is
set, so an empty table (the default) turns nothing on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.actions import names
from agent.config import WatcherConfig, http_url, not_negative, option, positive


@dataclass(frozen=True)
class ElbConfig:
    """``[aws.elb]``: leave these ELBv2 target groups before the hooks."""

    target_groups: tuple[str, ...] = names(
        (),
        'target group ARNs to leave before the hooks; "auto" = every instance target group '
        "in the region that holds this instance (DescribeTargetGroups, then one "
        "DescribeTargetHealth call per group)",
    )
    timeout: float = option(
        0.0, not_negative, "longest wait for the instance to drain; 0 = the groups' delay"
    )
    endpoint_url: str = option("", http_url, "ELBv2 API endpoint; empty = AWS's own")


@dataclass(frozen=True)
class AsgConfig(WatcherConfig):
    """``[aws.asg]``: the Auto Scaling termination watcher, and the lifecycle hook to end."""

    interval: float = option(5.0, positive, "seconds between polls")
    """The watcher's own default, kept when the table sets only the lifecycle keys."""
    lifecycle_hook: str = field(
        default="",
        metadata={"doc": "termination lifecycle hook to complete after the hooks; empty = off"},
    )
    heartbeat_interval: float = option(
        60.0, positive, "seconds between lifecycle heartbeats while the drain lasts"
    )
    endpoint_url: str = option("", http_url, "Auto Scaling API endpoint; empty = AWS's own")
