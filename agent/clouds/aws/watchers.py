"""AWS EC2: IMDSv2 watchers for spot, rebalance, maintenance and Auto Scaling notices.

Each parse function's docstring gives its payload's shape. They are pure
(body in, notices out) so every shape, good and bad, is unit-tested without a server.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from agent import notice as n
from agent.clouds._shared import ec2_protocol
from agent.clouds._shared.ec2_protocol import INSTANCE_ID, Parser, PathWatcher
from agent.clouds.aws.config import AwsConfig
from agent.notice import Notice, parse_rfc3339

LOG = logging.getLogger(__name__)

NAME = "aws"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name, not a secret
IDENTITY = "/latest/dynamic/instance-identity/document"
SPOT_ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
MAINTENANCE = "/latest/meta-data/events/maintenance/scheduled"
ASG_STATE = "/latest/meta-data/autoscaling/target-lifecycle-state"

__all__ = ["INSTANCE_ID", "Instance", "Parser", "PathWatcher", "build"]

ASG_TERMINATED = ("Terminated", "Warmed:Terminated")
SPOT_ACTIONS = ("terminate", "stop", "hibernate")
SPOT_DEFAULT_NOTICE = timedelta(minutes=2)
MAINTENANCE_TIME_FORMAT = "%d %b %Y %H:%M:%S GMT"


def _shown(value: object) -> str:
    """A payload value for a log line: repr (control characters escaped), cut short."""
    text = repr(value[:81] if isinstance(value, str) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json(body: str, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise ValueError(f"{what} is not JSON: {body[:80]!r}") from None


def parse_spot_action(body: str, instance_id: str, now: datetime) -> Notice:
    """``{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`` into a notice.

    A notice with an unreadable time is still a notice (losing a real interruption is worse
    than guessing its time): the deadline becomes now + the documented two minutes. So is
    one whose action is missing or not a string: it drains with the action ``unknown``. A
    body that is not a JSON object with an action or a time is not a notice (a captive page
    or a proxy's answer must not drain every instance behind it).
    """
    data = _json(body, "spot instance-action")
    if not isinstance(data, dict) or not ("action" in data or "time" in data):
        raise ValueError(f"spot instance-action has no action: {body[:80]!r}")
    action: object = data.get("action")
    if isinstance(action, str):
        action = action.strip().lower()
    if action not in SPOT_ACTIONS:
        # Notice.observed turns anything but a short printable token into "unknown".
        LOG.warning(
            "spot instance-action has an unknown action %s; draining anyway", _shown(action)
        )
    try:
        deadline = parse_rfc3339(str(data["time"])[:64])
    except (KeyError, ValueError):
        deadline = now + SPOT_DEFAULT_NOTICE
        LOG.warning(
            "spot instance-action time %s unreadable; assuming %s",
            _shown(data.get("time")),
            deadline,
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
            LOG.warning(
                "skipping a scheduled maintenance event without EventId/Code: %s", _shown(item)
            )
            continue
        if str(item.get("State", "active")).lower() != "active":
            continue
        deadline = parse_maintenance_time(item.get("NotBefore"))
        if deadline is None:
            LOG.warning(
                "maintenance event %s has an unreadable NotBefore %s",
                str(item["EventId"])[:80],
                _shown(item.get("NotBefore")),
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


class Instance(ec2_protocol.Instance):
    """IMDSv2: a 403/404/405 on the token PUT means IMDSv1 only, so carry on without one."""

    ttl_header = TTL_HEADER
    token_header = TOKEN_HEADER
    tokenless_fallback = True


def build(section: AwsConfig, instance: Instance) -> list[PathWatcher]:
    """The enabled watchers, all on one instance (one token, identity read once)."""
    table = (
        ("spot", SPOT_ACTION, section.spot, parse_spot_action),
        ("rebalance", REBALANCE, section.rebalance, parse_rebalance),
        ("maintenance", MAINTENANCE, section.maintenance, parse_maintenance),
        ("asg", ASG_STATE, section.asg, parse_asg_state),
    )
    return [
        PathWatcher(
            f"{NAME}-{name}",
            path,
            settings.interval,
            parse,
            instance,
            section.max_backoff,
            # Terminations are polled even while the instance id cannot be read.
            without_instance_id=name in ("spot", "asg"),
        )
        for name, path, settings, parse in table
        if settings.enabled
    ]


TERMINATION_PATHS: list[tuple[str, Parser]] = [
    (SPOT_ACTION, parse_spot_action),
    (ASG_STATE, parse_asg_state),
]
"""What says a termination is under way, asked once on the shutdown path."""
