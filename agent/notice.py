"""The one shape every cloud's interruption signal is turned into."""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Optional

from agent.clock import utc_rfc3339

LOG = logging.getLogger(__name__)

SPOT_INTERRUPTION = "spot-interruption"
ASG_TERMINATION = "asg-termination"
REBALANCE_RECOMMENDATION = "rebalance-recommendation"
SCHEDULED_MAINTENANCE = "scheduled-maintenance"

TERMINAL_KINDS = frozenset({SPOT_INTERRUPTION, ASG_TERMINATION})
"""Kinds after which the instance goes away: the agent drains, confirms and exits."""
SHUTDOWN = "shutdown"
"""The agent is being stopped (``drain_on_shutdown``): not a cloud's notice."""
KINDS = (
    SPOT_INTERRUPTION,
    ASG_TERMINATION,
    REBALANCE_RECOMMENDATION,
    SCHEDULED_MAINTENANCE,
    SHUTDOWN,
)

UNKNOWN_ACTION = "unknown"
"""The action of a notice whose cloud gave no usable one: it is still a notice."""
ACTION_MAX = 32
ID_MAX = 128
RAW_MAX = 4096
"""A notice keeps (and the state file and hooks get) only the first 4096 characters of the
cloud's payload: enough for any real notice, never a copy of a huge answer per hook."""
_ACTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")
_ID_CHAR = re.compile(r"[^\x21-\x7e]")


def safe_action(value: object) -> str:
    """``value`` if it is a short printable token (``terminate``, ``system-reboot``),
    otherwise :data:`UNKNOWN_ACTION`: hooks get it in an environment variable and the log,
    where a NUL byte, a newline or a megabyte must never arrive."""
    if isinstance(value, str) and len(value) <= ACTION_MAX and _ACTION.fullmatch(value):
        return value
    _warn_action(_shown(value))
    return UNKNOWN_ACTION


@functools.lru_cache(maxsize=16)
def _warn_action(shown: str) -> None:
    """Once per distinct value, not once per poll."""
    LOG.warning("notice action %s is not a short printable token; using %r", shown, UNKNOWN_ACTION)


def safe_id(value: object) -> str:
    """An id made printable: every character outside visible ASCII becomes ``\\xNN`` (or
    ``\\uNNNN``), and it is cut at :data:`ID_MAX`. The same input always gives the same
    id, so an event id built from it stays stable across polls."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > ID_MAX:
        text = text[:ID_MAX]
    if _ID_CHAR.search(text):
        text = _ID_CHAR.sub(lambda m: _escape(m.group()), text)[:ID_MAX]
    return text


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _shown(value: object) -> str:
    """A value as a log line may show it: repr (which escapes control characters), cut."""
    text = repr(value[:81] if isinstance(value, (str, bytes)) else value)
    return text if len(text) <= 80 else text[:77] + "..."


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
        action: object,
        instance_id: str,
        deadline: Optional[datetime],
        raw: str,
        now: datetime,
        cloud_event_id: str = "",
    ) -> Notice:
        """A notice as a watcher sees it, with the stable ``event_id`` built in one place:
        provider, instance, kind and the cloud's own event id when it has one.

        Fields from the cloud are made safe here, the one place every watcher goes through:
        the action becomes a short token (or :data:`UNKNOWN_ACTION`), ids printable ASCII,
        the payload its first :data:`RAW_MAX` characters. A malformed field never drops the
        notice: a termination that cannot be read well is still a termination.
        """
        instance_id = safe_id(instance_id)
        cloud_event_id = safe_id(cloud_event_id) if cloud_event_id else ""
        parts = [provider, instance_id, kind] + ([cloud_event_id] if cloud_event_id else [])
        if not isinstance(raw, str):
            raw = str(raw)
        return cls(
            provider=provider,
            kind=kind,
            action=safe_action(action),
            instance_id=instance_id,
            event_id=":".join(parts),
            deadline=deadline,
            raw=raw[:RAW_MAX],
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
