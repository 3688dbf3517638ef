"""The Tencent Cloud flavour of the mock metadata service: plain GETs, no token or header."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from agent.clouds.tencent.parse import CST
from agent.clouds.tencent.watchers import (
    INSTANCE_ID,
    INSTANCE_TYPE,
    PLACEMENT_REGION,
    PLACEMENT_ZONE,
    TERMINATION_TIME,
)
from agent.mock.flavor import Flavor, MockCloud
from agent.mock.server import MockMetadataServer

FLAVOR_SPEC = Flavor("tencent", ttl_header=None, token_header=None)


def termination_time(when: datetime) -> str:
    """``2018-08-18 12:05:33``: China Standard Time, no zone in the text, as the service."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")


def defaults(
    server: MockMetadataServer, instance_id: str = "ins-r8hr2upy", region: Optional[str] = None
) -> None:
    """Fill in the instance id, and the placement and type, as the service has them."""
    region = region or "ap-guangzhou"
    server.set(INSTANCE_ID, instance_id)
    server.set(PLACEMENT_REGION, region)
    server.set(PLACEMENT_ZONE, f"{region}-3")
    server.set(INSTANCE_TYPE, "SA2.MEDIUM2")


def spot_notice(server: MockMetadataServer, deadline: datetime, at: float) -> str:
    """A termination time for ``deadline`` that appears at ``at`` (server clock)."""
    server.set_at(TERMINATION_TIME, termination_time(deadline), at)
    return TERMINATION_TIME


MOCK = MockCloud(FLAVOR_SPEC, defaults, spot_notice)
