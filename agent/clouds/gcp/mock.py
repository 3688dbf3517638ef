"""The GCP flavour of the mock metadata service: the flavour header, ETags, hanging GETs.

As the real server: every request must carry ``Metadata-Flavor: Google`` (else 403 with
Google's text), a request with ``X-Forwarded-For`` is refused, every answer carries
``Metadata-Flavor: Google`` and an ``ETag`` of its content, and
``?wait_for_change=true`` holds the request until the value's ETag differs from
``last_etag`` (or, without one, changes) or ``timeout_sec`` passes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

from agent.clouds.gcp.metadata import FLAVOR, FLAVOR_HEADER, PREFIX
from agent.clouds.gcp.watchers import (
    INSTANCE_ID,
    INSTANCE_NAME,
    INSTANCE_ZONE,
    MACHINE_TYPE,
    MAINTENANCE_EVENT,
    PREEMPTED,
)
from agent.mock.flavor import Flavor, MockCloud
from agent.mock.handler import Answer, MockHTTPServer
from agent.mock.server import MockMetadataServer

MISSING_HEADER = 'Missing required header "Metadata-Flavor": "Google"'
"""The real server's 403 body for a request without the flavour header."""
MAX_WAIT = 3600
CHECK_EVERY = 0.05
"""How often a held request looks at values scheduled with ``set_at``."""

FLAVOR_SPEC = Flavor(
    "gcp",
    ttl_header=None,
    token_header=None,
    required_headers={FLAVOR_HEADER: FLAVOR},
    missing_header_status=403,
    response_headers={FLAVOR_HEADER: FLAVOR},
)

PREEMPTED_PATH = PREFIX + PREEMPTED
MAINTENANCE_PATH = PREFIX + MAINTENANCE_EVENT


def etag_of(status: int, body: str) -> str:
    """A content ETag, as the real server's: the same value always has the same one."""
    return hashlib.sha256(f"{status}:{body}".encode()).hexdigest()[:16]


class GcpMockServer(MockMetadataServer):
    """The generic mock with GCP's answers: flavour header both ways, ETags, hanging GETs."""

    def __init__(self, flavor: Flavor = FLAVOR_SPEC, *args: Any, **kwargs: Any) -> None:
        super().__init__(flavor, *args, **kwargs)
        self._changed = threading.Condition()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def set(self, path: str, body: Optional[str], *args: Any, **kwargs: Any) -> None:
        super().set(path, body, *args, **kwargs)
        self._notify()

    def set_at(self, path: str, body: str, at: float, status: int = 200) -> None:
        super().set_at(path, body, at, status)
        self._notify()

    def set_dynamic(self, path: str, fn: Callable[[], Optional[str]]) -> None:
        super().set_dynamic(path, fn)
        self._notify()

    def _current_etag(self, path: str) -> str:
        status, body, _, _ = self._lookup(path)
        return etag_of(status, body)

    def _hold(
        self, path: str, query: dict[str, list[str]], etag: str, httpd: MockHTTPServer
    ) -> None:
        """Wait as the real server does before answering a ``wait_for_change`` request whose
        value has ETag ``etag`` now."""
        try:
            wait = min(MAX_WAIT, max(0.0, float(query.get("timeout_sec", ["60"])[0])))
        except ValueError:
            wait = 60.0
        last = query.get("last_etag", [None])[0]
        if last is not None and last != etag:
            return  # the caller's value is out of date: answer at once
        end = time.monotonic() + wait
        while not httpd.closing.is_set():
            if self._current_etag(path) != etag:
                return
            left = end - time.monotonic()
            if left <= 0:
                return
            with self._changed:
                self._changed.wait(min(left, CHECK_EVERY))

    def serve(
        self, method: str, raw_path: str, headers: Any, raw: bytes, httpd: MockHTTPServer
    ) -> Optional[Answer]:
        parts = urlsplit(raw_path)
        flavoured = headers.get(FLAVOR_HEADER) == FLAVOR
        if headers.get("X-Forwarded-For") is not None and flavoured:
            return 403, "Forbidden\n", "text/plain", {FLAVOR_HEADER: FLAVOR}
        answer = super().serve(method, raw_path, headers, raw, httpd)
        if answer is None:
            return None
        status, body, kind, extra = answer
        if not flavoured and status == self.flavor.missing_header_status:
            return status, MISSING_HEADER + "\n", "text/plain", {FLAVOR_HEADER: FLAVOR}
        query = parse_qs(parts.query)
        if method == "GET" and query.get("wait_for_change") == ["true"] and status in (200, 404):
            # Logged (and failures applied) on arrival; the answer is the value after the wait.
            self._hold(parts.path, query, etag_of(status, body), httpd)
            if httpd.closing.is_set():
                return None
            status, body, kind, extra = self._lookup(parts.path)
        extra = {FLAVOR_HEADER: FLAVOR, **extra}
        if status == 200:
            extra.setdefault("ETag", etag_of(status, body))
        return status, body, kind, extra


def defaults(
    server: MockMetadataServer,
    instance_id: str = "4520031799277581759",
    name: str = "spot-vm-1",
    zone: str = "us-central1-a",
    region: Optional[str] = None,
) -> None:
    """Fill in the identity keys and a quiet instance (``FALSE``, ``NONE``)."""
    if region is not None:
        zone = f"{region}-a"
    server.set(PREFIX + INSTANCE_ID, instance_id)
    server.set(PREFIX + INSTANCE_NAME, name)
    server.set(PREFIX + INSTANCE_ZONE, f"projects/123456789012/zones/{zone}")
    server.set(PREFIX + MACHINE_TYPE, "projects/123456789012/machineTypes/e2-medium")
    server.set(PREEMPTED_PATH, "FALSE")
    server.set(MAINTENANCE_PATH, "NONE")


def spot_notice(server: MockMetadataServer, deadline: datetime, at: float) -> str:
    """``preempted`` turns ``TRUE`` at ``at`` (the metadata carries no deadline)."""
    server.set_at(PREEMPTED_PATH, "TRUE", at)
    return PREEMPTED_PATH


MOCK = MockCloud(FLAVOR_SPEC, defaults, spot_notice, watcher="preempted", server=GcpMockServer)
