"""The ECS flavour of the mock metadata service (hardened mode), and an instance's paths."""

from __future__ import annotations

from datetime import datetime

from agent.clouds.alibaba.watchers import (
    INSTANCE_TYPE,
    REGION_ID,
    TERMINATION_TIME,
    TOKEN_HEADER,
    TTL_HEADER,
    ZONE_ID,
)
from agent.mock.flavor import Flavor, MockCloud, rfc3339
from agent.mock.server import MockMetadataServer

FLAVOR = Flavor("alibaba", TTL_HEADER, TOKEN_HEADER, 403)


def defaults(
    server: MockMetadataServer,
    instance_id: str = "i-bp13znx0m0me8cquu0001",
    region: str = "cn-hangzhou",
) -> None:
    """Fill in the identity paths the agent reads on an ECS instance."""
    server.set("/latest/meta-data/instance-id", instance_id)
    server.set(REGION_ID, region)
    server.set(ZONE_ID, f"{region}-b")
    server.set(INSTANCE_TYPE, "ecs.g6.large")


def spot_notice(server: MockMetadataServer, deadline: datetime, at: float) -> str:
    """A release notice for ``deadline`` that appears at ``at``."""
    server.set_at(TERMINATION_TIME, rfc3339(deadline), at)
    return TERMINATION_TIME


MOCK = MockCloud(FLAVOR, defaults, spot_notice)
