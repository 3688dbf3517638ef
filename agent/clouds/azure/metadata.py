"""A client for Azure's instance metadata service (IMDS): ``Metadata: true`` on every request.

Without that header the service answers 400; a request with ``X-Forwarded-For`` is refused,
and the service must never be reached through a proxy (the shared HTTP client reads no
proxy settings). Above about five requests a second it answers 429.
"""

from __future__ import annotations

import http.client
import logging
from typing import Optional
from urllib.parse import urlsplit

from agent.clouds._shared.http import HttpClient, MetadataError, parse_retry_after

LOG = logging.getLogger(__name__)

HEADERS = {"Metadata": "true"}
EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"
VM_NAME = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
COMPUTE = "/metadata/instance/compute?api-version=2021-02-01"
"""The VM's compute document (JSON: ``location``, ``zone``, ``vmSize``, ...). Microsoft
documents it; the team's reference notes (/work/shared/reference/clouds.md) only name
``compute/name`` and a few siblings, so these three keys are unverified there."""
MAX_DOCUMENT = 512 * 1024
"""A scale set's document lists its neighbours' events too, each with every VM it touches."""
MAX_ANSWER = 4096
"""The approval's answer is read this far at most: only its status matters."""
THROTTLED_WAIT = 1.0
"""The wait after a 429 that names none: Microsoft's polling pace."""


class AzureMetadata:
    """Requests to IMDS; one at a time per client (the approval has its own)."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = HttpClient(base_url, timeout=timeout, max_body=MAX_DOCUMENT)

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, timeout: Optional[float] = None) -> Optional[str]:
        """The body at ``path``; None for 404. MetadataError for anything transient."""
        status, body, retry_after = self._send("GET", path, timeout)
        if status == 200:
            return body
        if status == 404:
            return None
        raise _failure("GET", path, status, body, retry_after)

    def post(self, path: str, body: str, timeout: Optional[float] = None) -> None:
        """POST a JSON body; MetadataError unless the service answers 200.

        The shared client sends no request body, so this one small exchange is done here,
        with the same rules: one bound for the whole exchange, no proxy, no redirect
        followed, a capped read.
        """
        bound = max(0.05, self.timeout if timeout is None else timeout)
        parts = urlsplit(self.base_url)
        data = body.encode("utf-8")
        headers = dict(HEADERS, **{"Content-Type": "application/json"})
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=bound)
        try:
            conn.request("POST", parts.path.rstrip("/") + path, data, headers)
            response = conn.getresponse()
            status = response.status
            text = response.read(MAX_ANSWER).decode("utf-8", errors="replace")
            retry_after = parse_retry_after(response.headers.get("Retry-After"), 60.0)
        except (OSError, http.client.HTTPException) as exc:
            raise MetadataError(f"POST {path}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if status != 200:
            raise _failure("POST", path, status, text, retry_after)

    def _send(
        self, method: str, path: str, timeout: Optional[float]
    ) -> tuple[int, str, Optional[float]]:
        bound = max(0.05, self.timeout if timeout is None else timeout)
        response = self._http.request(method, path, HEADERS, timeout=bound)
        return response.status, response.text, response.retry_after


def _failure(
    method: str, path: str, status: int, body: str, retry_after: Optional[float]
) -> MetadataError:
    if status == 429:
        return MetadataError(
            f"{method} {path}: throttled (429)",
            retry_after if retry_after is not None else THROTTLED_WAIT,
        )
    detail = " ".join(body.split())[:80]
    return MetadataError(f"{method} {path} answered {status} {detail!r}", retry_after)
