"""GCP watchers: one hanging GET per metadata key, the way Google's own agents watch.

The first request of a watcher is a plain GET, so a value that is already set (an agent
started while ``preempted`` is ``TRUE``) is acted on at once. Every later request hangs
on the server until the value's ETag changes or ``wait_seconds`` pass: a change reaches
the agent within a round trip, and an idle agent sends one request per key per wait.
The poll scheduler gives each watcher its own thread, so a held request blocks only it.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable, Optional

from agent.clock import Clock
from agent.clouds._shared.http import MetadataError
from agent.clouds.base import Watcher
from agent.clouds.gcp import parse
from agent.clouds.gcp.config import GcpConfig, HangingWatcherConfig
from agent.clouds.gcp.metadata import GcpMetadata, Value
from agent.notice import Notice

LOG = logging.getLogger(__name__)

PREEMPTED = "instance/preempted"
MAINTENANCE_EVENT = "instance/maintenance-event"
INSTANCE_ID = "instance/id"
INSTANCE_NAME = "instance/name"
INSTANCE_ZONE = "instance/zone"
MACHINE_TYPE = "instance/machine-type"
"""``projects/NUMBER/machineTypes/TYPE``: Google documents it, but it is unverified in the
team's reference notes (/work/shared/reference/clouds.md lists id, name and zone only)."""
MIN_SPACING = 1.0
"""An answer that came back sooner than this without a change delays the next request to
this spacing: a server (or a key that is absent) that does not hold requests must not be
asked in a tight loop."""

ToNotice = Callable[[str, str, datetime, datetime], Optional[Notice]]
"""(body, instance id, first seen, now) into the notice the value stands for, or None."""


class Identity:
    """The instance id (needed for notices), name and zone, read once and shared."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self._client = GcpMetadata(base_url, timeout)
        self._lock = threading.Lock()
        self._id: Optional[str] = None
        self.name: Optional[str] = None
        self.zone: Optional[str] = None

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def instance_id(self, timeout: Optional[float] = None) -> str:
        """The numeric instance id; MetadataError/ValueError until the server gives one."""
        with self._lock:
            if self._id is None:
                value = self._client.get(INSTANCE_ID, timeout=timeout)
                if value is None:
                    raise MetadataError(f"{INSTANCE_ID} is missing")
                self._id = parse.parse_instance_id(value.body)
                if timeout is None:
                    self._describe()
            return self._id

    def _describe(self) -> None:
        """Name and zone are for the log only: their absence never stops watching."""
        try:
            name = self._client.get(INSTANCE_NAME)
            self.name = name.body.strip()[:64] if name else None
            if self.zone is None:  # unless :meth:`placement` has read it already
                zone = self._client.get(INSTANCE_ZONE)
                self.zone = parse.parse_zone(zone.body) if zone else None
        except (MetadataError, ValueError) as exc:
            LOG.warning("cannot read the instance's name and zone: %s", exc)
        LOG.info("GCP instance %s (%s) in %s", self._id, self.name or "?", self.zone or "?")

    def placement(self, timeout: float) -> tuple[Optional[str], Optional[str]]:
        """The zone (as the watchers read it, or one GET) and the machine type (one GET),
        each request bounded by ``timeout``. Not under the id's lock: a slow answer here
        must never hold up a watcher's first poll. Raises MetadataError or ValueError."""
        if self.zone is None:
            zone = self._client.get(INSTANCE_ZONE, timeout=timeout)
            self.zone = parse.parse_zone(zone.body) if zone else None
        machine = self._client.get(MACHINE_TYPE, timeout=timeout)
        return self.zone, parse.parse_machine_type(machine.body) if machine else None

    def close(self) -> None:
        self._client.close()


class HangingWatcher(Watcher):
    """Watches one key with hanging GETs; ``poll`` returns once per answer."""

    def __init__(
        self,
        name: str,
        key: str,
        to_notice: ToNotice,
        identity: Identity,
        section: GcpConfig,
        settings: HangingWatcherConfig,
        clock: Clock,
    ) -> None:
        self.name = name
        self.key = key
        self.interval = settings.interval
        self.max_backoff = section.max_backoff
        self._to_notice = to_notice
        self._identity = identity
        self._wait = section.wait_seconds
        self._clock = clock
        self._client = GcpMetadata(section.metadata_url, section.timeout)
        self._closed = threading.Event()
        self._armed = False  # the next request may hang (a value or a 404 has been read)
        self._last: Optional[tuple[Optional[str], Optional[str]]] = None  # (body, etag)
        self._seen: Optional[tuple[str, datetime]] = None  # value, when it was first read
        self._not_before = 0.0
        self._had_notice = False

    def poll(self) -> list[Notice]:
        instance_id = self._identity.instance_id()
        pause = self._not_before - self._clock.monotonic()
        if pause > 0 and self._clock.wait_for(self._closed, pause):
            return []
        hanging = self._armed
        etag = self._last[1] if self._last else None
        started = self._clock.monotonic()
        try:
            value = self._client.get(
                self.key,
                wait_seconds=self._wait if hanging else None,
                last_etag=etag if hanging else None,
            )
        except MetadataError:
            self._armed = False  # read the value at once when the server is back
            raise
        now = self._clock.now()
        current = (value.body.strip(), value.etag) if value is not None else (None, None)
        if current == self._last and self._clock.monotonic() - started < MIN_SPACING:
            self._not_before = started + MIN_SPACING
        self._last = current
        notices = self._notices(value, instance_id, now)
        # A notice that just went is read again at once with a plain GET rather than after
        # a whole wait: the core counts a notice gone after two answers without it.
        self._armed = not (self._had_notice and not notices)
        self._had_notice = bool(notices)
        return notices

    def _notices(self, value: Optional[Value], instance_id: str, now: datetime) -> list[Notice]:
        if value is None:  # 404: the key is not there, so nothing is pending
            self._seen = None
            return []
        body = value.body.strip()
        if self._seen is None or self._seen[0] != body:
            self._seen = (body, now)
        try:
            notice = self._to_notice(body, instance_id, self._seen[1], now)
        except ValueError:
            self._armed = False
            self._last = None
            raise
        return [notice] if notice is not None else []

    def close(self) -> None:
        self._closed.set()
        self._client.close()


def build(section: GcpConfig, clock: Clock, identity: Identity) -> list[Watcher]:
    """The enabled watchers: ``preempted`` and ``maintenance-event``."""

    def preempted(body: str, instance_id: str, seen: datetime, now: datetime) -> Optional[Notice]:
        return parse.preempted_notice(body, instance_id, seen, section.notice_seconds, now)

    table = (
        ("gcp-preempted", PREEMPTED, preempted, section.preempted),
        ("gcp-maintenance", MAINTENANCE_EVENT, parse.maintenance_notice, section.maintenance),
    )
    return [
        HangingWatcher(name, key, fn, identity, section, settings, clock)
        for name, key, fn, settings in table
        if settings.enabled
    ]
