"""The Azure Scheduled Events watcher: this VM's events, polled every ``interval`` (1 s).

The first request switches the service on and may take up to two minutes to answer: it
gets its own long bound and is start-up, not a failure. Events of other VMs in the same
document (a scale set, an availability set) are not this VM's business. An event that
disappears was either cancelled or is over: the core sees the notice go and decides.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Optional

from agent.clock import Clock
from agent.clouds._shared.http import MetadataError
from agent.clouds.azure import parse
from agent.clouds.azure.config import AzureConfig
from agent.clouds.azure.metadata import EVENTS, VM_NAME, AzureMetadata
from agent.clouds.base import Watcher
from agent.notice import Notice

LOG = logging.getLogger(__name__)


class VmName:
    """This VM's name (``compute/name``), read once: events are matched on it."""

    def __init__(self, client: AzureMetadata) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._name: Optional[str] = None

    def get(self, timeout: Optional[float] = None) -> str:
        with self._lock:
            if self._name is None:
                body = self._client.get(VM_NAME, timeout)
                if body is None:
                    raise MetadataError("compute/name is missing")
                self._name = parse.parse_vm_name(body)
                LOG.info("Azure VM name is %s", self._name)
            return self._name

    @property
    def known(self) -> Optional[str]:
        return self._name


class Deadlines:
    """Each event's deadline, kept while the event is listed.

    ``NotBefore`` goes blank once an event has ``Started``: the deadline read before stays.
    An event first seen without one gets its first sighting plus the type's minimum notice.
    """

    def __init__(self) -> None:
        self._known: dict[str, datetime] = {}

    def notices(self, events: list[parse.Event], vm_name: str, now: datetime) -> list[Notice]:
        known = {}
        for event in events:
            deadline = event.not_before or self._known.get(event.event_id)
            if deadline is None:
                deadline = parse.fallback_deadline(event, now)
                LOG.warning(
                    "scheduled event %s (%s, %s) has no NotBefore; assuming %s",
                    event.event_id,
                    event.event_type,
                    event.status or "no status",
                    deadline.isoformat(),
                )
            known[event.event_id] = deadline
        self._known = known
        return [parse.to_notice(e, vm_name, self._known[e.event_id], now) for e in events]


class EventsWatcher(Watcher):
    name = "azure-events"

    def __init__(self, section: AzureConfig, clock: Clock) -> None:
        self.interval = section.events.interval
        self.max_backoff = max(self.interval, section.max_backoff)
        self._section = section
        self._clock = clock
        self._client = AzureMetadata(section.metadata_url, section.timeout)
        self.vm_name = VmName(self._client)
        self._deadlines = Deadlines()
        self._answered = False

    def poll(self) -> list[Notice]:
        vm_name = self.vm_name.get()
        timeout = None
        if not self._answered:
            timeout = self._section.startup_timeout
            LOG.info(
                "asking for Scheduled Events: the first answer switches the service on and "
                "can take up to two minutes"
            )
        body = self._client.get(EVENTS, timeout)
        if body is None:
            raise MetadataError("Scheduled Events answered 404: not available on this VM")
        events = parse.events_for(body, vm_name)
        if not self._answered:
            self._answered = True
            LOG.info("Scheduled Events answered; polling every %g s", self.interval)
        return self._deadlines.notices(events, vm_name, self._clock.now())

    def close(self) -> None:
        self._client.close()
