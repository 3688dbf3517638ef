"""The Azure flavour of the mock metadata service: Scheduled Events and their approval.

As the real IMDS: every request must carry ``Metadata: true`` (else 400 with Azure's JSON
error), and an ``api-version``; a request with ``X-Forwarded-For`` is refused. The
events document is ``{"DocumentIncarnation": N, "Events": [...]}`` and N grows on every
change; ``POST`` of ``{"StartRequests": [{"EventId": ...}]}`` approves (200 for any
well-formed body, 400 otherwise) and an approved event is then ``Started``. The first
events request can be held (``first_call_delay``), as the service takes up to two minutes
to switch on.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from agent.clouds.azure.metadata import HEADERS
from agent.mock.flavor import Flavor, MockCloud
from agent.mock.handler import Answer, MockHTTPServer
from agent.mock.server import MockMetadataServer

EVENTS_PATH = "/metadata/scheduledevents"
NAME_PATH = "/metadata/instance/compute/name"
COMPUTE_PATH = "/metadata/instance/compute"
MISSING_HEADER = {"error": "Bad request. Required metadata header not specified"}
MISSING_VERSION = {
    "error": "Bad request. api-version was not specified in the request. For more "
    "information refer to aka.ms/azureimds",
    "newest-versions": ["2021-02-01", "2020-12-01", "2020-10-01"],
}
BAD_APPROVAL = {"error": "Bad request. StartRequests is not in the expected format"}

FLAVOR_SPEC = Flavor(
    "azure",
    ttl_header=None,
    token_header=None,
    required_headers=dict(HEADERS),
    missing_header_status=400,
)


def rfc1123(when: datetime) -> str:
    """``Mon, 19 Sep 2016 18:29:47 GMT``, the way ``NotBefore`` is written."""
    return format_datetime(when.astimezone(timezone.utc).replace(microsecond=0), usegmt=True)


def event(
    event_type: str,
    resources: list[str],
    not_before: Optional[datetime],
    event_id: Optional[str] = None,
    status: str = "Scheduled",
) -> dict[str, Any]:
    """One event as the service writes it."""
    return {
        "EventId": event_id or str(uuid.uuid4()).upper(),
        "EventStatus": status,
        "EventType": event_type,
        "ResourceType": "VirtualMachine",
        "Resources": list(resources),
        "NotBefore": rfc1123(not_before) if not_before else "",
        "Description": "",
        "EventSource": "Platform",
        "DurationInSeconds": -1,
    }


def _json(status: int, data: Any) -> Answer:
    return status, json.dumps(data), "application/json; charset=utf-8", {}


class AzureMockServer(MockMetadataServer):
    """The generic mock with Azure's Scheduled Events document and approval endpoint."""

    def __init__(self, flavor: Flavor = FLAVOR_SPEC, *args: Any, **kwargs: Any) -> None:
        super().__init__(flavor, *args, **kwargs)
        self._events_lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._later: list[tuple[float, dict[str, Any]]] = []
        self._incarnation = 1
        self._approved: list[str] = []
        self.first_call_delay = 0.0
        self.vm_name = "spot-vm-1"
        self._switched_on = False
        self.set_dynamic(EVENTS_PATH, self.document)

    # -- scripting --------------------------------------------------------------------------

    def set_events(self, events: list[dict[str, Any]]) -> None:
        """Replace the events (``[]``: none); the incarnation grows."""
        with self._events_lock:
            self._events = [dict(e) for e in events]
            self._incarnation += 1

    def add_event(self, item: dict[str, Any], at: Optional[float] = None) -> None:
        """Add an event now, or once the server's clock reaches ``at``."""
        with self._events_lock:
            if at is None:
                self._events.append(dict(item))
                self._incarnation += 1
            else:
                self._later.append((at, dict(item)))

    def cancel(self, event_id: str) -> None:
        """The event goes from Scheduled straight to gone, as a cancelled one does."""
        with self._events_lock:
            self._events = [e for e in self._events if e["EventId"] != event_id]
            self._incarnation += 1

    @property
    def approved(self) -> list[str]:
        """Every EventId approved so far, in order."""
        with self._events_lock:
            return list(self._approved)

    def document(self) -> str:
        with self._events_lock:
            now = self._clock()
            due = [item for at, item in self._later if at <= now]
            if due:
                self._later = [(at, item) for at, item in self._later if at > now]
                self._events.extend(due)
                self._incarnation += 1
            return json.dumps({"DocumentIncarnation": self._incarnation, "Events": self._events})

    # -- serving ----------------------------------------------------------------------------

    def _approve(self, raw: bytes) -> Answer:
        try:
            data = json.loads(raw.decode("utf-8"))
            ids = [str(item["EventId"]) for item in data["StartRequests"]]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return _json(400, BAD_APPROVAL)
        with self._events_lock:
            self._approved.extend(ids)
            changed = False
            for item in self._events:
                if item["EventId"] in ids and item["EventStatus"] == "Scheduled":
                    item["EventStatus"], item["NotBefore"] = "Started", ""
                    changed = True
            self._incarnation += int(changed)
        return 200, "", "application/json; charset=utf-8", {}

    def serve(
        self, method: str, raw_path: str, headers: Any, raw: bytes, httpd: MockHTTPServer
    ) -> Optional[Answer]:
        parts = urlsplit(raw_path)
        if headers.get("X-Forwarded-For") is not None:
            return _json(403, {"error": "Forbidden: X-Forwarded-For is not allowed"})
        if parts.path == EVENTS_PATH and method == "GET" and not self._switched_on:
            self._switched_on = True
            if self.first_call_delay and httpd.closing.wait(self.first_call_delay):
                return None
        answer = super().serve(method, raw_path, headers, raw, httpd)
        if answer is None:
            return None
        status = answer[0]
        flavoured = all(headers.get(k) == v for k, v in HEADERS.items())
        if not flavoured and status == self.flavor.missing_header_status:
            return _json(400, MISSING_HEADER)
        versioned = bool(parse_qs(parts.query).get("api-version"))
        if status == 405 and method == "POST" and parts.path == EVENTS_PATH:
            if not flavoured:
                return _json(400, MISSING_HEADER)
            return self._approve(raw) if versioned else _json(400, MISSING_VERSION)
        if status < 300 and not versioned:
            return _json(400, MISSING_VERSION)
        if status == 200 and parts.path == EVENTS_PATH:
            return _json(200, json.loads(answer[1]))
        return answer


def defaults(
    server: MockMetadataServer, instance_id: str = "spot-vm-1", region: Optional[str] = None
) -> None:
    """Fill in this VM's name and compute document; the events document starts empty."""
    server.set(NAME_PATH, instance_id)
    compute = {
        "name": instance_id,
        "location": region or "eastus",
        "zone": "1",
        "vmSize": "Standard_D2s_v3",
        "priority": "Spot",
        "evictionPolicy": "Delete",
    }
    server.set(COMPUTE_PATH, json.dumps(compute))
    if isinstance(server, AzureMockServer):
        server.vm_name = instance_id


def spot_notice(server: MockMetadataServer, deadline: datetime, at: float) -> str:
    """A Preempt event for this VM that appears at ``at`` (server clock)."""
    if not isinstance(server, AzureMockServer):
        raise TypeError("the Azure flavour needs its own server: AzureMockServer")
    server.add_event(event("Preempt", [server.vm_name], deadline), at)
    return EVENTS_PATH


MOCK = MockCloud(FLAVOR_SPEC, defaults, spot_notice, watcher="events", server=AzureMockServer)
