"""HTTP client for a link-local instance metadata service with session tokens.

AWS IMDSv2 and Alibaba's hardened mode share one protocol (PUT a token, send it on every
GET) and differ in header names; a cloud package passes its names in, the way cloud-init's
Alibaba source reuses the EC2 token flow.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Optional

from agent.clock import Clock
from agent.clouds._shared.http import (
    DEFAULT_RETRY_AFTER_CAP,
    HttpClient,
    MetadataError,
    Response,
)

__all__ = ["TOKEN_PATH", "MetadataClient", "MetadataError"]

LOG = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path, not a secret
TOKENLESS_STATUSES = frozenset({403, 404, 405})
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")
"""A token goes back in a header: visible ASCII only, bounded."""


class MetadataClient:
    """GETs paths under ``base_url`` with a cached token, refreshed before it expires.

    Requests go through :class:`~agent.clouds._shared.http.HttpClient`: each bounded as a
    whole by ``timeout``, never redirected, never compressed, bodies capped; a server's
    ``Retry-After`` comes back finite, at most ``retry_after_cap`` seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ttl_header: str,
        token_header: str,
        token_ttl: int,
        timeout: float,
        clock: Clock,
        tokenless_fallback: bool,
        retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._ttl_header = ttl_header
        self._token_header = token_header
        self._ttl = token_ttl
        self._timeout = timeout
        self._clock = clock
        self._tokenless_fallback = tokenless_fallback
        self._token: Optional[str] = None
        self._token_expires = 0.0
        self._tokenless = False
        self._lock = threading.Lock()
        """Held while the token is fetched, never during a GET: one slow answer must not
        hold up the other watchers' polls."""
        # http.client reads no proxy settings: link-local addresses never go via a proxy.
        self._http = HttpClient(base_url, timeout=timeout, retry_after_cap=retry_after_cap)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, headers: dict[str, str]) -> Response:
        # A failure is a MetadataError whose text names the method and path, never a header,
        # so no token can leak through it.
        return self._http.request(method, path, headers)

    def _token_value(self) -> Optional[str]:
        with self._lock:
            return self._fetch_token()

    def _fetch_token(self) -> Optional[str]:
        if self._tokenless:
            return None
        now = self._clock.monotonic()
        if self._token is not None and now < self._token_expires:
            return self._token
        response = self._request("PUT", TOKEN_PATH, {self._ttl_header: str(self._ttl)})
        if response.status == 200 and response.text.strip():
            token = response.text.strip()
            if not _TOKEN.fullmatch(token):
                raise MetadataError(
                    f"token request answered an unusable token ({len(token)} characters)"
                )
            self._token = token
            # Refresh well before expiry so a poll never carries a token that dies in flight.
            self._token_expires = now + self._ttl - min(60.0, self._ttl / 10)
            return self._token
        if self._tokenless_fallback and response.status in TOKENLESS_STATUSES:
            LOG.warning(
                "metadata token endpoint %s answered %d; continuing without a session token",
                self.base_url + TOKEN_PATH,
                response.status,
            )
            self._tokenless = True
            return None
        raise MetadataError(f"token request answered {response.status}", response.retry_after)

    def get(self, path: str) -> Optional[str]:
        """The body at ``path``, or None when the service says 404 (nothing there).

        Raises MetadataError for anything transient: no connection, timeouts, 5xx, 429,
        a token that is refused twice, a redirect, an oversized or compressed answer. Safe
        to call from several threads (the watchers poll in parallel while a confirmation
        reads credentials from a worker); only the token fetch is serialised.
        """
        for attempt in (1, 2):
            token = self._token_value()
            headers = {self._token_header: token} if token else {}
            response = self._request("GET", path, headers)
            status = response.status
            if status == 200:
                return response.text
            if status == 404:
                return None
            if status == 401 and attempt == 1:
                # Expired or revoked: forget it (and any token-less mode) and ask once more,
                # unless another thread has fetched a new one meanwhile.
                with self._lock:
                    if self._token == token:
                        self._token = None
                        self._tokenless = False
                continue
            raise MetadataError(
                f"GET {path} answered {status}", response.retry_after, answered=status != 401
            )
        raise AssertionError("unreachable")  # pragma: no cover
