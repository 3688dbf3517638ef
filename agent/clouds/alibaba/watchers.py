"""Alibaba Cloud ECS: the preemptible-instance release notice from instance metadata.

The metadata service is the EC2 protocol with Alibaba's header names (see
:mod:`agent.clouds._shared.ec2_protocol`). In
hardened mode every request needs a token and a token is always issued, so a refused token
request is a transient failure, never a reason to go token-less. The service is
rate-limited: instance-id and region-id are read once.
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import datetime, timezone
from typing import Optional

from agent import notice as n
from agent.clouds._shared import ec2_protocol
from agent.clouds._shared.ec2_protocol import Parser, PathWatcher
from agent.clouds._shared.http import MetadataError
from agent.clouds._shared.parse import stale
from agent.clouds.alibaba.config import AlibabaConfig
from agent.notice import Notice, parse_rfc3339

LOG = logging.getLogger(__name__)

NAME = "alibaba"
TTL_HEADER = "X-aliyun-ecs-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aliyun-ecs-metadata-token"  # noqa: S105 - a header name, not a secret
REGION_ID = "/latest/meta-data/region-id"
# zone-id and instance-type are Alibaba's documented metadata items, but unverified in the
# team's reference notes (/work/shared/reference/clouds.md lists region-id only): read for
# the webhooks' identity only, and their absence is no failure.
ZONE_ID = "/latest/meta-data/zone-id"
INSTANCE_TYPE = "/latest/meta-data/instance/instance-type"
TERMINATION_TIME = "/latest/meta-data/instance/spot/termination-time"

_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)?", re.ASCII)
"""ASCII digits only (``\\d`` alone takes any script's digits), a bounded fraction."""


def parse_release_time(text: str) -> datetime:
    """``2015-01-05T18:02:00Z`` as an aware UTC datetime; raises ValueError otherwise.

    The service documents UTC with a ``Z``; an explicit offset is honoured, and a time
    without a zone is read as the documented UTC rather than dropped.
    """
    text = text.strip()
    match = _TIME.fullmatch(text)
    try:
        if match is None:
            raise ValueError("unknown format")
        if match.group(2):
            value = parse_rfc3339(text)
        else:
            value = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"termination-time is not a time ({exc}): {text[:80]!r}") from None
    return value.astimezone(timezone.utc)


def parse_termination_time(
    body: Optional[str], instance_id: str, now: datetime, action: str = "terminate"
) -> Optional[Notice]:
    """The termination-time body into a notice; None (404) or blank means none pending.

    ``action`` is what the instance's interruption behaviour makes of it (terminate or
    stop): the metadata does not say. Raises ValueError for a body that is not a time. A
    time long past is a leftover: no notice (a stale value must never start a drain), and
    not an error either, so polling keeps its pace for the real notice that may follow.
    """
    if body is None or not body.strip():
        return None
    deadline = parse_release_time(body)
    if stale(deadline, now, body.strip(), LOG):
        return None
    # Keyed on instance and kind: one instance is released once, whatever the body says.
    return Notice.observed(NAME, n.SPOT_INTERRUPTION, action, instance_id, deadline, body, now)


class Instance(ec2_protocol.Instance):
    """Hardened-mode client. Region-id is read with the instance id, once, for the ECS API."""

    ttl_header = TTL_HEADER
    token_header = TOKEN_HEADER
    tokenless_fallback = False
    also_read = (REGION_ID,)

    def read_region_id(self) -> Optional[str]:
        """The region (``cn-hangzhou``); None if the service has none to give."""
        return self.read_once_optional(REGION_ID)

    def read_identity(self) -> dict[str, Optional[str]]:
        """Region, zone and instance type, each read once (the region is usually cached by
        then); stops at the first transient failure with what it has: the service is
        rate-limited, and a failing one fails the next path too."""
        found: dict[str, Optional[str]] = {}
        paths = (("region", REGION_ID), ("zone", ZONE_ID), ("instance_type", INSTANCE_TYPE))
        for key, path in paths:
            try:
                found[key] = self.read_once_optional(path)
            except MetadataError as exc:
                LOG.warning("cannot read %s: %s", path.rsplit("/", 1)[-1], exc)
                break
        return found


def parser(section: AlibabaConfig) -> Parser:
    """termination-time's parser, with the action the configured behaviour makes of it."""
    return functools.partial(parse_termination_time, action=section.interruption_behavior)


def build(section: AlibabaConfig, instance: Instance) -> list[PathWatcher]:
    """The spot watcher, when enabled."""
    if not section.spot.enabled:
        return []
    return [
        PathWatcher(
            f"{NAME}-spot",
            TERMINATION_TIME,
            section.spot.interval,
            parser(section),
            instance,
            section.max_backoff,
        )
    ]
