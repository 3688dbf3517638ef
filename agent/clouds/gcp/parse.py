"""GCP metadata values into notices: pure functions, unit-tested on every shape.

``instance/preempted`` is ``TRUE`` or ``FALSE``; ``instance/maintenance-event`` is ``NONE``
or the kind of host maintenance about to happen. Anything else is a body this agent cannot
read (ValueError): a proxy's error page or a damaged answer must never start a drain.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Optional

from agent import notice as n
from agent.clouds._shared.parse import matching
from agent.notice import Notice

LOG = logging.getLogger(__name__)

NAME = "gcp"
MAINTENANCE_NOTICE = timedelta(seconds=60)
"""GCP changes maintenance-event about 60 s before the event: the advisory deadline."""
KNOWN_MAINTENANCE = (
    "MIGRATE_ON_HOST_MAINTENANCE",
    "TERMINATE_ON_HOST_MAINTENANCE",
    "SHUTDOWN_ON_HOST_MAINTENANCE",  # in older samples
)
_WORD = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_ID = re.compile(r"[0-9]{1,24}")
_ZONE = re.compile(r"(?:projects/[^/\s]{1,64}/zones/)?([a-z][a-z0-9-]{0,62})")
_MACHINE_TYPE = re.compile(r"(?:projects/[^/\s]{1,64}/machineTypes/)?([a-z][a-z0-9-]{0,62})")


def _short(body: str) -> str:
    return repr(body[:80])


def parse_preempted(body: str) -> bool:
    """``TRUE``/``FALSE`` (any case, surrounding blanks allowed); ValueError otherwise."""
    value = body.strip().upper()
    if value == "TRUE":
        return True
    if value == "FALSE":
        return False
    raise ValueError(f"instance/preempted is neither TRUE nor FALSE: {_short(body)}")


def parse_maintenance_event(body: str) -> Optional[str]:
    """The upcoming maintenance (``MIGRATE_ON_HOST_MAINTENANCE``...), or None for ``NONE``.

    An unknown word is still maintenance (GCP has renamed these before), logged; a body
    that is not one upper-case word is unreadable (ValueError).
    """
    value = body.strip()
    if value == "NONE":
        return None
    if not _WORD.fullmatch(value):
        raise ValueError(f"instance/maintenance-event is not a maintenance value: {_short(body)}")
    if value not in KNOWN_MAINTENANCE:
        LOG.warning("unknown maintenance-event %r; treating it as host maintenance", value)
    return value


def parse_instance_id(body: str) -> str:
    """``instance/id`` (always numeric on GCP); ValueError for anything else."""
    return matching(body, _ID, "instance/id is not an instance id")


def parse_zone(body: str) -> str:
    """``projects/123/zones/us-central1-a`` into ``us-central1-a``; ValueError otherwise."""
    match = _ZONE.fullmatch(body.strip())
    if match is None:
        raise ValueError(f"instance/zone is not a zone: {_short(body)}")
    return match.group(1)


def region_of(zone: str) -> str:
    """``us-central1-a`` into ``us-central1``: a zone is its region plus ``-`` and a letter."""
    region, dash, _ = zone.rpartition("-")
    return region if dash and region else ""


def parse_machine_type(body: str) -> str:
    """``projects/123/machineTypes/e2-medium`` into ``e2-medium``; ValueError otherwise."""
    match = _MACHINE_TYPE.fullmatch(body.strip())
    if match is None:
        raise ValueError(f"instance/machine-type is not a machine type: {_short(body)}")
    return match.group(1)


def preempted_notice(
    body: str, instance_id: str, seen: datetime, notice_seconds: float, now: datetime
) -> Optional[Notice]:
    """A ``TRUE`` preempted value as a termination; ``seen`` is when TRUE was first read.

    The metadata gives no time: the deadline is the first sighting plus the configured
    notice (30 s best effort by default, 120 s with ``preemptionNoticeDuration``).
    """
    if not parse_preempted(body):
        return None
    deadline = seen + timedelta(seconds=notice_seconds)
    return Notice.observed(
        NAME, n.SPOT_INTERRUPTION, "terminate", instance_id, deadline, body.strip(), now
    )


def maintenance_notice(
    body: str, instance_id: str, seen: datetime, now: datetime
) -> Optional[Notice]:
    """An upcoming host maintenance as an advisory notice; None for ``NONE``.

    Keyed on the value, so a migration that turns into a termination is a new notice.
    """
    value = parse_maintenance_event(body)
    if value is None:
        return None
    action = value.split("_ON_", 1)[0].lower()
    return Notice.observed(
        NAME,
        n.SCHEDULED_MAINTENANCE,
        action,
        instance_id,
        seen + MAINTENANCE_NOTICE,
        value,
        now,
        cloud_event_id=value,
    )
