"""A client for the GCP metadata server: the flavour header both ways, and hanging GETs.

Every request carries ``Metadata-Flavor: Google`` and every real answer carries it back;
an answer without it comes from something else on the path (a proxy, a captive portal)
and is never read as metadata. A hanging GET (``wait_for_change=true``) is held by the
server until the value changes or ``timeout_sec`` passes, so its own bound is that wait
plus a margin, never the short bound of a plain request.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from agent.clouds._shared.http import HttpClient, MetadataError

LOG = logging.getLogger(__name__)

PREFIX = "/computeMetadata/v1/"
FLAVOR_HEADER = "Metadata-Flavor"
FLAVOR = "Google"
HANG_MARGIN = 10.0
"""Added to ``timeout_sec`` for a hanging GET's own bound (Google's guest agent: 60 + 10)."""
_ETAG = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class Value:
    """A key's current value and the ETag that names it."""

    body: str
    etag: Optional[str]


class GcpMetadata:
    """GETs keys under ``/computeMetadata/v1/``; one request at a time per client.

    A hanging GET holds the client for its whole wait, so each watcher has its own.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = HttpClient(base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def get(
        self,
        key: str,
        *,
        wait_seconds: Optional[int] = None,
        last_etag: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Optional[Value]:
        """The value of ``key`` (``instance/preempted``); None when the server says 404.

        With ``wait_seconds`` it is a hanging GET: answered when the value differs from
        ``last_etag`` (or, without one, changes) or after ``wait_seconds``. ``timeout``
        bounds a plain request (default: the client's). Raises MetadataError on anything
        transient: no connection, a timeout, 5xx, 429, an answer without the flavour header.
        """
        path = PREFIX + key
        if wait_seconds is not None:
            path += f"?wait_for_change=true&timeout_sec={int(wait_seconds)}"
            if last_etag is not None and _ETAG.fullmatch(last_etag):
                path += "&last_etag=" + quote(last_etag, safe="")
            bound = wait_seconds + HANG_MARGIN
        else:
            bound = timeout if timeout is not None else self.timeout
        response = self._http.request(
            "GET", path, {FLAVOR_HEADER: FLAVOR}, timeout=max(0.05, bound)
        )
        if response.headers.get(FLAVOR_HEADER, "").strip() != FLAVOR:
            raise MetadataError(
                f"GET {PREFIX}{key}: answer ({response.status}) without "
                f"{FLAVOR_HEADER}: {FLAVOR}: not the GCP metadata server"
            )
        if response.status == 404:
            return None
        if response.status != 200:
            raise MetadataError(
                f"GET {PREFIX}{key} answered {response.status}", response.retry_after
            )
        etag = response.headers.get("ETag", "").strip().strip('"') or None
        return Value(response.text, etag)
