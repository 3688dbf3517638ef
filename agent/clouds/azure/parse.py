"""Azure Scheduled Events documents into notices: pure functions, unit-tested on every shape.

A document is ``{"DocumentIncarnation": N, "Events": [...]}``. Only events whose
``Resources`` name this VM concern it: in a scale set or availability set the same
document lists the neighbours' events too. A damaged event is logged and skipped; it never
hides the others, and a document that is not one is an error (the poll backs off).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Optional

from agent import notice as n
from agent.clouds._shared.parse import matching
from agent.notice import Notice

LOG = logging.getLogger(__name__)

NAME = "azure"
TERMINATIONS = {"Preempt": n.SPOT_INTERRUPTION, "Terminate": n.ASG_TERMINATION}
"""Preempt is a Spot eviction; Terminate a scale-in or delete (like an ASG termination)."""
MAINTENANCE = ("Reboot", "Redeploy", "Freeze")
MINIMUM_NOTICE = {
    "Preempt": timedelta(seconds=30),
    "Terminate": timedelta(minutes=5),
    "Reboot": timedelta(minutes=15),
    "Redeploy": timedelta(minutes=10),
    "Freeze": timedelta(minutes=15),
}
"""Microsoft's documented minimum notice: the deadline when ``NotBefore`` is blank."""
DEFAULT_NOTICE = timedelta(seconds=30)
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_TYPE = re.compile(r"[A-Za-z]{1,32}")
_VM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")


@dataclass(frozen=True)
class Event:
    """One scheduled event that names this VM."""

    event_id: str
    event_type: str
    status: str
    not_before: Optional[datetime]
    raw: str


def parse_compute(body: str) -> dict[str, Optional[str]]:
    """The compute document's region (``location``), ``zone`` (``"1"``, or blank outside an
    availability zone) and size (``vmSize``); a key that is absent or not a string is None.
    ValueError for a body that is not a JSON object."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError(f"compute document is not JSON: {body[:80]!r}") from None
    if not isinstance(data, dict):
        raise ValueError("compute document is not an object")

    def text(key: str) -> Optional[str]:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return {"region": text("location"), "zone": text("zone"), "instance_type": text("vmSize")}


def parse_not_before(text: Any) -> Optional[datetime]:
    """``Mon, 19 Sep 2016 18:29:47 GMT`` (RFC 1123) as aware UTC; None when blank or bad."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if value is None:  # pragma: no cover - Python < 3.10 returns None for some garbage
        return None
    if value.tzinfo is None:  # "-0000" means UTC with no zone information
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def parse_vm_name(body: str) -> str:
    """``compute/name`` (``format=text``); ValueError for anything that is not a VM name."""
    return matching(body, _VM_NAME, "compute/name is not a VM name")


def parse_document(body: str) -> tuple[int, list[Any]]:
    """The incarnation and the raw events; ValueError when the body is not a document."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError(f"scheduled events are not JSON: {body[:80]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Events"), list):
        raise ValueError(f"scheduled events document has no Events list: {body[:80]!r}")
    incarnation = data.get("DocumentIncarnation", 0)
    if not isinstance(incarnation, int) or isinstance(incarnation, bool):
        raise ValueError(f"DocumentIncarnation is not a number: {incarnation!r}")
    return incarnation, data["Events"]


def events_for(body: str, vm_name: str) -> list[Event]:
    """This VM's events in a document, in document order."""
    _, items = parse_document(body)
    mine = vm_name.casefold()  # Azure resource names are case-insensitive
    found = []
    for item in items:
        if not isinstance(item, dict):
            LOG.warning("skipping a scheduled event that is not an object: %.80r", item)
            continue
        event_id, event_type = item.get("EventId"), item.get("EventType")
        if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            LOG.warning("skipping a scheduled event without a usable EventId: %.80r", event_id)
            continue
        if not isinstance(event_type, str) or not _TYPE.fullmatch(event_type):
            LOG.warning("skipping scheduled event %s: EventType %.40r", event_id, event_type)
            continue
        resources = item.get("Resources")
        if not isinstance(resources, list):
            LOG.warning("skipping scheduled event %s: Resources is not a list", event_id)
            continue
        if not any(isinstance(r, str) and r.casefold() == mine for r in resources):
            continue
        status = item.get("EventStatus")
        found.append(
            Event(
                event_id=event_id,
                event_type=event_type,
                status=status if isinstance(status, str) else "",
                not_before=parse_not_before(item.get("NotBefore")),
                raw=json.dumps(item, sort_keys=True),
            )
        )
    return found


def kind_of(event_type: str) -> str:
    """The notice kind for an EventType; an unknown type is advisory maintenance."""
    if event_type in TERMINATIONS:
        return TERMINATIONS[event_type]
    if event_type not in MAINTENANCE:
        LOG.warning("unknown scheduled event type %r; treating it as maintenance", event_type)
    return n.SCHEDULED_MAINTENANCE


def to_notice(event: Event, instance_id: str, deadline: datetime, now: datetime) -> Notice:
    """The notice for one event; ``deadline`` is decided by the caller (see ``deadline_for``)."""
    return Notice.observed(
        NAME,
        kind_of(event.event_type),
        event.event_type.lower(),
        instance_id,
        deadline,
        event.raw,
        now,
        cloud_event_id=event.event_id,
    )


def fallback_deadline(event: Event, first_seen: datetime) -> datetime:
    """No readable ``NotBefore`` (blank once ``Started``, or after a hardware failure):
    the first sighting plus the documented minimum notice for the type."""
    return first_seen + MINIMUM_NOTICE.get(event.event_type, DEFAULT_NOTICE)


def event_id_of(notice: Notice) -> Optional[str]:
    """The Azure ``EventId`` behind a notice (from its raw event), for the approval."""
    try:
        data = json.loads(notice.raw)
    except ValueError:
        return None
    event_id = data.get("EventId") if isinstance(data, dict) else None
    if isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id):
        return event_id
    return None


def approval_body(event_id: str) -> str:
    """The body that releases an event: ``{"StartRequests": [{"EventId": "..."}]}``."""
    return json.dumps({"StartRequests": [{"EventId": event_id}]})
