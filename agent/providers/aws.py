"""AWS EC2: IMDSv2 watchers for spot, rebalance, maintenance and Auto Scaling notices.

Payload shapes and quirks are in the README's AWS section. The parse functions are pure
(body in, notices out) so every shape, good and bad, is unit-tested without a server.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from agent import notice as n
from agent.clock import Clock
from agent.config import Config
from agent.notice import Notice, parse_rfc3339
from agent.providers import imds
from agent.providers.base import Provider, Watcher
from agent.providers.imds import INSTANCE_ID, Parser, PathWatcher

LOG = logging.getLogger(__name__)

NAME = "aws"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name, not a secret
IDENTITY = "/latest/dynamic/instance-identity/document"
SPOT_ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
MAINTENANCE = "/latest/meta-data/events/maintenance/scheduled"
ASG_STATE = "/latest/meta-data/autoscaling/target-lifecycle-state"

__all__ = ["INSTANCE_ID", "PROVIDER", "AwsProvider", "Instance", "Parser", "PathWatcher"]

ASG_TERMINATED = ("Terminated", "Warmed:Terminated")
SPOT_ACTIONS = ("terminate", "stop", "hibernate")
SPOT_DEFAULT_NOTICE = timedelta(minutes=2)
MAINTENANCE_TIME_FORMAT = "%d %b %Y %H:%M:%S GMT"


def _json(body: str, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError(f"{what} is not JSON: {body[:80]!r}") from None


def parse_spot_action(body: str, instance_id: str, now: datetime) -> Notice:
    """``{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`` into a notice.

    A notice with an unreadable time is still a notice (losing a real interruption is worse
    than guessing its time): the deadline becomes now + the documented two minutes.
    """
    data = _json(body, "spot instance-action")
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        raise ValueError(f"spot instance-action has no action: {body[:80]!r}")
    action = data["action"].strip().lower()
    if action not in SPOT_ACTIONS:
        LOG.warning("spot instance-action has an unknown action %r; treating it as one", action)
    try:
        deadline = parse_rfc3339(str(data["time"]))
    except (KeyError, ValueError):
        deadline = now + SPOT_DEFAULT_NOTICE
        LOG.warning(
            "spot instance-action time %r unreadable; assuming %s", data.get("time"), deadline
        )
    # Keyed on instance and kind only: AWS's own mock rewrites "time" on every answer.
    return Notice.observed(NAME, n.SPOT_INTERRUPTION, action, instance_id, deadline, body, now)


def parse_rebalance(body: str, instance_id: str, now: datetime) -> Notice:
    """``{"noticeTime": "..."}``: elevated risk, not a termination, so no deadline."""
    data = _json(body, "rebalance recommendation")
    if not isinstance(data, dict):
        raise ValueError(f"rebalance recommendation is not an object: {body[:80]!r}")
    kind = n.REBALANCE_RECOMMENDATION
    return Notice.observed(NAME, kind, "rebalance", instance_id, None, body, now)


def parse_maintenance_time(text: Any) -> Optional[datetime]:
    try:
        return datetime.strptime(str(text), MAINTENANCE_TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def parse_maintenance(body: str, instance_id: str, now: datetime) -> list[Notice]:
    """The scheduled-events array; only ``active`` events are notices.

    A damaged item is logged and skipped; it never hides the other events.
    """
    if not body.strip():
        return []
    data = _json(body, "scheduled maintenance")
    if not isinstance(data, list):
        raise ValueError(f"scheduled maintenance is not a list: {body[:80]!r}")
    notices = []
    for item in data:
        if not isinstance(item, dict) or not item.get("EventId") or not item.get("Code"):
            LOG.warning("skipping a scheduled maintenance event without EventId/Code: %r", item)
            continue
        if str(item.get("State", "active")).lower() != "active":
            continue
        deadline = parse_maintenance_time(item.get("NotBefore"))
        if deadline is None:
            LOG.warning(
                "maintenance event %s has an unreadable NotBefore %r",
                item["EventId"],
                item.get("NotBefore"),
            )
        notices.append(
            Notice.observed(
                NAME,
                n.SCHEDULED_MAINTENANCE,
                str(item["Code"]),
                instance_id,
                deadline,
                json.dumps(item, sort_keys=True),
                now,
                cloud_event_id=str(item["EventId"]),
            )
        )
    return notices


def parse_asg_state(body: str, instance_id: str, now: datetime) -> Optional[Notice]:
    """``Terminated`` (or ``Warmed:Terminated`` in a warm pool): this instance is going away."""
    if body.strip() not in ASG_TERMINATED:
        return None
    return Notice.observed(NAME, n.ASG_TERMINATION, "terminate", instance_id, None, body, now)


def parse_identity(body: str) -> dict[str, Any]:
    """The instance identity document; raises ValueError without instanceId and region."""
    data = _json(body, "instance identity document")
    if not isinstance(data, dict) or not data.get("instanceId") or not data.get("region"):
        raise ValueError("instance identity document lacks instanceId or region")
    return data


class Instance(imds.Instance):
    """IMDSv2: a 403/404/405 on the token PUT means IMDSv1 only, so carry on without one."""

    ttl_header = TTL_HEADER
    token_header = TOKEN_HEADER
    tokenless_fallback = True


class AwsProvider(Provider):
    name = NAME

    def __init__(self) -> None:
        self.instance: Optional[Instance] = None
        """The instance behind the watchers, so confirmation reuses its token."""

    def watchers(self, config: Config, clock: Clock) -> list[Watcher]:
        aws = config.aws
        instance = self.instance = Instance(aws, clock)
        table = (
            ("spot", SPOT_ACTION, aws.spot, parse_spot_action),
            ("rebalance", REBALANCE, aws.rebalance, parse_rebalance),
            ("maintenance", MAINTENANCE, aws.maintenance, parse_maintenance),
            ("asg", ASG_STATE, aws.asg, parse_asg_state),
        )
        return [
            PathWatcher(f"aws-{name}", path, settings.interval, parse, instance)
            for name, path, settings, parse in table
            if settings.enabled
        ]


PROVIDER = AwsProvider()
