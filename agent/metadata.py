"""HTTP client for a link-local instance metadata service with session tokens.

AWS IMDSv2 and Alibaba's hardened mode share one protocol (PUT a token, send it on every
GET) and differ in header names; a provider module passes its names in, the way cloud-init's
Alibaba source reuses the EC2 token flow.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

import requests

from agent.clock import Clock

LOG = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path, not a secret
TOKENLESS_STATUSES = frozenset({403, 404, 405})


class MetadataError(Exception):
    """A transient failure: the caller backs off and polls again; it never ends the daemon."""

    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(response: requests.Response) -> Optional[float]:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class MetadataClient:
    """GETs paths under ``base_url`` with a cached token, refreshed before it expires."""

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
        self._session = requests.Session()
        # Link-local addresses must never go through an HTTP proxy from the environment.
        self._session.trust_env = False

    def close(self) -> None:
        self._session.close()

    def _request(self, method: str, path: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self._session.request(
                method, self.base_url + path, headers=headers, timeout=self._timeout
            )
        except requests.RequestException as exc:
            # The exception text names the URL, never a header, so no token can leak here.
            raise MetadataError(f"{method} {path}: {type(exc).__name__}: {exc}") from None

    def _token_value(self) -> Optional[str]:
        if self._tokenless:
            return None
        now = self._clock.monotonic()
        if self._token is not None and now < self._token_expires:
            return self._token
        response = self._request("PUT", TOKEN_PATH, {self._ttl_header: str(self._ttl)})
        if response.status_code == 200 and response.text.strip():
            self._token = response.text.strip()
            # Refresh well before expiry so a poll never carries a token that dies in flight.
            self._token_expires = now + self._ttl - min(60.0, self._ttl / 10)
            return self._token
        if self._tokenless_fallback and response.status_code in TOKENLESS_STATUSES:
            LOG.warning(
                "metadata token endpoint %s answered %d; continuing without a session token",
                self.base_url + TOKEN_PATH,
                response.status_code,
            )
            self._tokenless = True
            return None
        raise MetadataError(
            f"token request answered {response.status_code}", _retry_after(response)
        )

    def get(self, path: str) -> Optional[str]:
        """The body at ``path``, or None when the service says 404 (nothing there).

        Raises MetadataError for anything transient: no connection, timeouts, 5xx, 429,
        a token that is refused twice. Safe to call from several threads: the watchers poll
        from the main loop while a confirmation reads credentials from a worker.
        """
        with self._lock:
            return self._get(path)

    def _get(self, path: str) -> Optional[str]:
        for attempt in (1, 2):
            token = self._token_value()
            headers = {self._token_header: token} if token else {}
            response = self._request("GET", path, headers)
            status = response.status_code
            if status == 200:
                return response.text
            if status == 404:
                return None
            if status == 401 and attempt == 1:
                # Expired or revoked: forget it (and any token-less mode) and ask once more.
                self._token = None
                self._tokenless = False
                continue
            raise MetadataError(f"GET {path} answered {status}", _retry_after(response))
        raise AssertionError("unreachable")  # pragma: no cover
