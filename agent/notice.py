"""The one shape every cloud's interruption signal is turned into."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Optional

from agent.clock import utc_rfc3339

SPOT_INTERRUPTION = "spot-interruption"
ASG_TERMINATION = "asg-termination"
REBALANCE_RECOMMENDATION = "rebalance-recommendation"
SCHEDULED_MAINTENANCE = "scheduled-maintenance"

TERMINAL_KINDS = frozenset({SPOT_INTERRUPTION, ASG_TERMINATION})
"""Kinds after which the instance goes away: the agent drains, confirms and exits."""
KINDS = (SPOT_INTERRUPTION, ASG_TERMINATION, REBALANCE_RECOMMENDATION, SCHEDULED_MAINTENANCE)


@dataclass(frozen=True)
class Notice:
    """One interruption, however often the cloud repeats it.

    ``event_id`` is stable across polls: it is built from what identifies the interruption
    (instance, kind, the cloud's own event id), never from a payload field such as ``time``
    that a metadata service may rewrite on every answer.
    """

    provider: str
    kind: str
    action: str
    instance_id: str
    event_id: str
    deadline: Optional[datetime]
    raw: str
    detected_at: datetime

    @classmethod
    def observed(
        cls,
        provider: str,
        kind: str,
        action: str,
        instance_id: str,
        deadline: Optional[datetime],
        raw: str,
        now: datetime,
        cloud_event_id: str = "",
    ) -> Notice:
        """A notice as a watcher sees it, with the stable ``event_id`` built in one place:
        provider, instance, kind and the cloud's own event id when it has one."""
        parts = [provider, instance_id, kind] + ([cloud_event_id] if cloud_event_id else [])
        return cls(
            provider=provider,
            kind=kind,
            action=action,
            instance_id=instance_id,
            event_id=":".join(parts),
            deadline=deadline,
            raw=raw,
            detected_at=now,
        )

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["deadline"] = utc_rfc3339(self.deadline) if self.deadline else None
        data["detected_at"] = utc_rfc3339(self.detected_at)
        data["terminal"] = self.terminal
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notice:
        """Inverse of :meth:`to_dict`; raises KeyError/ValueError on a damaged record."""
        deadline = data["deadline"]
        return cls(
            provider=str(data["provider"]),
            kind=str(data["kind"]),
            action=str(data["action"]),
            instance_id=str(data["instance_id"]),
            event_id=str(data["event_id"]),
            deadline=parse_rfc3339(deadline) if deadline else None,
            raw=str(data["raw"]),
            detected_at=parse_rfc3339(data["detected_at"]),
        )


def parse_rfc3339(text: str) -> datetime:
    """Parse ``2017-09-18T08:22:00Z`` (or with an offset) into an aware UTC datetime.

    ``datetime.fromisoformat`` only takes a trailing ``Z`` from Python 3.11 on.
    """
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return value
