"""A scriptable, real-HTTP mock of an instance metadata service with session tokens.

The agent is only as good as its handling of the metadata service's odd corners: tokens
that expire, throttling, a service that vanishes or answers slowly, notices that appear
mid-run. This server reproduces those on 127.0.0.1 (or any address, e.g. 169.254.169.254
inside a network namespace) so the real agent process can be run against it. What differs
between clouds is a :class:`~agent.mock.flavor.Flavor`, given by each cloud's package.
Standard library only, because ``preempt-agent demo`` ships it.

Paths under ``/__mock__/`` are a control API (:mod:`agent.mock.control`) that is never
token-checked, delayed or failed, so a test in another process can script the server.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from agent.mock.control import CONTROL_PREFIX, control
from agent.mock.flavor import Flavor
from agent.mock.handler import Answer, MockHTTPServer, text

LOG = logging.getLogger(__name__)

MAX_TOKEN_TTL = 21600


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; ``time`` is on the server's clock."""

    method: str
    path: str
    headers: dict[str, str]
    time: float
    query: str = ""


@dataclass
class _Route:
    body: Optional[str] = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    fn: Optional[Callable[[], Optional[str]]] = None


class MockMetadataServer:
    """The scriptable metadata service. Every public method is safe to call from any thread."""

    def __init__(
        self,
        flavor: Flavor,
        host: str = "127.0.0.1",
        port: int = 0,
        token_required: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flavor = flavor
        self.host = host
        self.port = port
        self.token_required = token_required
        self.token_endpoint_status: Optional[int] = None
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._routes: dict[str, _Route] = {}
        self._timed: dict[str, list[tuple[float, _Route]]] = {}
        self._tokens: dict[str, float] = {}
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._delay = 0.0
        self._log: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._httpd: Optional[MockHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MockMetadataServer:
        """Bind and serve in a background thread; ``port=0`` picks a free port, kept for good."""
        if self._httpd is None:
            httpd = MockHTTPServer((self.host, self.port), self)
            self.port = httpd.server_address[1]
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.02},  # stop() waits up to one interval
                name=f"mock-metadata-{self.port}",
                daemon=True,
            )
            self._httpd, self._thread = httpd, thread
            thread.start()
            LOG.debug("mock %s metadata service listening on %s", self.flavor.name, self.url)
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection; safe to call twice."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.closing.set()
            httpd.shutdown()
            httpd.server_close()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout=5)

    def refuse(self) -> None:
        """Stop listening, so new connections are refused (a service that went away)."""
        self.stop()

    def accept(self) -> None:
        """Listen again, on the same port as before."""
        self.start()

    def __enter__(self) -> MockMetadataServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------------

    def set(
        self, path: str, body: Optional[str], status: int = 200, headers: Optional[dict] = None
    ) -> None:
        """Serve ``body`` at ``path`` from now on (``None`` removes it: 404).

        This replaces anything scheduled with ``set_at`` or ``set_dynamic`` for the path.
        """
        with self._cond:
            self._timed.pop(path, None)
            if body is None:
                self._routes.pop(path, None)
            else:
                self._routes[path] = _Route(body, status, dict(headers or {}))

    def set_at(self, path: str, body: str, at: float, status: int = 200) -> None:
        """Serve ``body`` once ``clock() >= at``; until then the path answers as before."""
        with self._cond:
            self._timed.setdefault(path, []).append((at, _Route(body, status)))
            self._timed[path].sort(key=lambda item: item[0])

    def set_dynamic(self, path: str, fn: Callable[[], Optional[str]]) -> None:
        """Compute the body on every request (``None`` = 404), e.g. a notice whose time moves."""
        with self._cond:
            self._timed.pop(path, None)
            self._routes[path] = _Route(fn=fn)

    def fail(self, count: int, status: int = 500, headers: Optional[dict] = None) -> None:
        """Answer the next ``count`` requests (token PUT included) with ``status``."""
        with self._cond:
            self._failures.extend([(status, dict(headers or {}))] * count)

    def delay(self, seconds: float) -> None:
        """Hold every answer for ``seconds`` (0 turns it off): a slow or hung service."""
        with self._cond:
            self._delay = max(0.0, seconds)

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far; the next GET with one gets a 401."""
        with self._cond:
            self._tokens.clear()

    # -- the request log -------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far (control requests excluded)."""
        with self._cond:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._cond:
            self._log.clear()

    def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], timeout: float, start: int = 0
    ) -> RecordedRequest:
        """Return the first logged request from index ``start`` on that matches.

        Pass ``start=len(server.requests)`` to wait for a request that has not happened yet.
        Raises TimeoutError after ``timeout`` seconds (real time, not the injected clock).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            index = start
            while True:
                while index < len(self._log):
                    if predicate(self._log[index]):
                        return self._log[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching request within {timeout} s")
                self._cond.wait(remaining)

    # -- serving ---------------------------------------------------------------------------

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def answer(
        self, method: str, raw_path: str, headers: Any, raw: bytes, httpd: MockHTTPServer
    ) -> Optional[Answer]:
        """Decide the answer to one request; None means drop the connection unanswered.

        A control request (:data:`CONTROL_PREFIX`) is the mock's own, whatever the flavour;
        any other goes to :meth:`serve`, which a flavour's server extends."""
        path = urlsplit(raw_path).path
        if path.startswith(CONTROL_PREFIX):
            return control(self, method, path, raw)
        return self.serve(method, raw_path, headers, raw, httpd)

    def serve(
        self, method: str, raw_path: str, headers: Any, raw: bytes, httpd: MockHTTPServer
    ) -> Optional[Answer]:
        """The metadata service's answer to one request (not a control one)."""
        parts = urlsplit(raw_path)
        path = parts.path
        with self._cond:
            self._log.append(
                RecordedRequest(method, path, dict(headers.items()), self._clock(), parts.query)
            )
            self._cond.notify_all()
            failure = self._failures.pop(0) if self._failures else None
            delay = self._delay
        if delay and httpd.closing.wait(delay):
            return None
        if failure is not None:
            return failure[0], f"mock failure {failure[0]}\n", "text/plain", failure[1]
        flavor = self.flavor
        tokens = flavor.ttl_header is not None and flavor.token_header is not None
        if tokens and method == "PUT" and path == flavor.token_path:
            return self._issue_token(headers)
        if method != "GET" or (tokens and path == flavor.token_path):
            return text(405, "Method Not Allowed")
        for name, value in flavor.required_headers.items():
            if headers.get(name) != value:
                return text(flavor.missing_header_status, f"missing header {name}")
        if flavor.token_header is not None:
            denied = self._check_token(headers.get(flavor.token_header))
            if denied is not None:
                return text(denied, "Unauthorized" if denied == 401 else "Forbidden")
        status, body, kind, extra = self._lookup(path)
        return status, body, kind, {**flavor.response_headers, **extra}

    def _issue_token(self, headers: Any) -> Answer:
        if self.token_endpoint_status is not None:
            return text(self.token_endpoint_status, "token endpoint unavailable")
        if headers.get("X-Forwarded-For") is not None:
            return text(403, "Forbidden")
        ttl_header = self.flavor.ttl_header or ""
        try:
            ttl = int(headers.get(ttl_header, "").strip())
        except ValueError:
            return text(400, "Bad Request")
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return text(400, "Bad Request")
        token = secrets.token_urlsafe(40)
        with self._cond:
            self._tokens[token] = self._clock() + ttl
        return 200, token, "text/plain", {ttl_header: str(ttl)}

    def _check_token(self, token: Optional[str]) -> Optional[int]:
        """The status that refuses this token, or None if the request may be served."""
        if token is None:
            return self.flavor.missing_token_status if self.token_required else None
        with self._cond:
            expiry = self._tokens.get(token)
            if expiry is not None and self._clock() >= expiry:
                del self._tokens[token]
                expiry = None
        return 401 if expiry is None else None

    def _lookup(self, path: str) -> Answer:
        with self._cond:
            route = self._routes.get(path)
            now = self._clock()
            for at, timed in self._timed.get(path, []):
                if now >= at:
                    route = timed
        if route is None:
            return text(404, "Not Found")
        if route.fn is not None:
            body = route.fn()
            return text(404, "Not Found") if body is None else (200, body, "text/plain", {})
        return route.status, route.body or "", "text/plain", route.headers
