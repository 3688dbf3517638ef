"""A scriptable, real-HTTP mock of the AWS (IMDSv2) and Alibaba (hardened mode) metadata services.

The agent is only as good as its handling of the metadata service's odd corners: tokens
that expire, throttling, a service that vanishes or answers slowly, notices that appear
mid-run. This server reproduces those on 127.0.0.1 (or any address, e.g. 169.254.169.254
inside a network namespace) so the real agent process can be run against it. Standard
library only, because ``preempt-agent demo`` ships it.

Paths under ``/__mock__/`` are a control API that is never token-checked, delayed or
failed, so a test in another process can script the server:

* ``PUT /__mock__/path`` ``{"path": "/latest/...", "body": "..." | null, "status": 200}``
* ``PUT /__mock__/fail`` ``{"count": 2, "status": 503, "headers": {"Retry-After": "1"}}``
* ``PUT /__mock__/delay`` ``{"seconds": 1.5}``
* ``PUT /__mock__/expire-tokens``
* ``GET /__mock__/requests`` (the request log as JSON; ``DELETE`` clears it)
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

LOG = logging.getLogger(__name__)

CONTROL_PREFIX = "/__mock__/"
MAX_TOKEN_TTL = 21600


@dataclass(frozen=True)
class Flavor:
    """The header names and status codes that differ between the two metadata services."""

    name: str
    ttl_header: str
    token_header: str
    missing_token_status: int
    token_path: str = "/latest/api/token"  # noqa: S105 - a path


AWS = Flavor("aws", "X-aws-ec2-metadata-token-ttl-seconds", "X-aws-ec2-metadata-token", 401)
ALIBABA = Flavor(
    "alibaba", "X-aliyun-ecs-metadata-token-ttl-seconds", "X-aliyun-ecs-metadata-token", 403
)
FLAVORS: dict[str, Flavor] = {AWS.name: AWS, ALIBABA.name: ALIBABA}


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


class _HTTPServer(ThreadingHTTPServer):
    """One listening socket; ``accept()`` after ``refuse()`` makes a new one on the same port."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], mock: MockMetadataServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.mock = mock
        self.closing = threading.Event()  # set when this socket goes away; cuts delays short
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (or refuse() cutting it off) is routine here.
        LOG.debug("error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services
    timeout = 30  # idle keep-alive connections must not pin a thread forever
    # Headers and body go out in two writes; with Nagle on, a kept-alive client waits for
    # its delayed ACK (about 40 ms) on every answer after the first.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        # The request line never carries the token (it is a header), so this is safe to log.
        LOG.debug("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.server.mock._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.mock._track(self.connection, False)

    def __getattr__(self, name: str) -> Any:
        # Any method other than GET/PUT (POST, DELETE, PATCH, HEAD, ...) gets a 405.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        answer = self.server.mock._answer(self.command, self.path, self.headers, raw, self.server)
        if answer is None:  # the socket is closing: drop the connection without a word
            self.close_connection = True
            return
        status, body, content_type, headers = answer
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


_Answer = tuple[int, str, str, dict[str, str]]


class MockMetadataServer:
    """The scriptable metadata service. Every public method is safe to call from any thread."""

    def __init__(
        self,
        flavor: Flavor = AWS,
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
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MockMetadataServer:
        """Bind and serve in a background thread; ``port=0`` picks a free port, kept for good."""
        if self._httpd is None:
            httpd = _HTTPServer((self.host, self.port), self)
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

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _answer(
        self, method: str, raw_path: str, headers: Any, raw: bytes, httpd: _HTTPServer
    ) -> Optional[_Answer]:
        """Decide the answer to one request; None means drop the connection unanswered."""
        parts = urlsplit(raw_path)
        path = parts.path
        if path.startswith(CONTROL_PREFIX):
            return self._control(method, path, raw)
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
        if method == "PUT" and path == self.flavor.token_path:
            return self._issue_token(headers)
        if method != "GET" or path == self.flavor.token_path:
            return _text(405, "Method Not Allowed")
        denied = self._check_token(headers.get(self.flavor.token_header))
        if denied is not None:
            return _text(denied, "Unauthorized" if denied == 401 else "Forbidden")
        return self._lookup(path)

    def _issue_token(self, headers: Any) -> _Answer:
        if self.token_endpoint_status is not None:
            return _text(self.token_endpoint_status, "token endpoint unavailable")
        if headers.get("X-Forwarded-For") is not None:
            return _text(403, "Forbidden")
        try:
            ttl = int(headers.get(self.flavor.ttl_header, "").strip())
        except ValueError:
            return _text(400, "Bad Request")
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return _text(400, "Bad Request")
        token = secrets.token_urlsafe(40)
        with self._cond:
            self._tokens[token] = self._clock() + ttl
        return 200, token, "text/plain", {self.flavor.ttl_header: str(ttl)}

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

    def _lookup(self, path: str) -> _Answer:
        with self._cond:
            route = self._routes.get(path)
            now = self._clock()
            for at, timed in self._timed.get(path, []):
                if now >= at:
                    route = timed
        if route is None:
            return _text(404, "Not Found")
        if route.fn is not None:
            body = route.fn()
            return _text(404, "Not Found") if body is None else (200, body, "text/plain", {})
        return route.status, route.body or "", "text/plain", route.headers

    def _control(self, method: str, path: str, raw: bytes) -> _Answer:
        """The out-of-band API for scripting the server from another process."""
        action = path[len(CONTROL_PREFIX) :]
        if action == "requests" and method == "GET":
            log = [asdict(r) for r in self.requests]
            return 200, json.dumps(log), "application/json", {}
        if action == "requests" and method == "DELETE":
            self.clear_requests()
            return _json_ok()
        if method != "PUT":
            return _text(405, "Method Not Allowed")
        try:
            args = json.loads(raw.decode("utf-8") or "{}")
            if action == "path":
                self.set(
                    args["path"],
                    args.get("body"),
                    int(args.get("status", 200)),
                    args.get("headers"),
                )
            elif action == "fail":
                self.fail(int(args["count"]), int(args.get("status", 500)), args.get("headers"))
            elif action == "delay":
                self.delay(float(args["seconds"]))
            elif action == "expire-tokens":
                self.expire_tokens()
            else:
                return _text(404, "Not Found")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _text(400, f"bad control request: {exc}")
        return _json_ok()


def _text(status: int, message: str) -> _Answer:
    return status, message + "\n", "text/plain", {}


def _json_ok() -> _Answer:
    return 200, '{"ok": true}', "application/json", {}


# -- helpers that fill in the usual paths ------------------------------------------------------


def rfc3339(dt: datetime) -> str:
    """UTC, whole seconds, ``Z`` suffix: the way both clouds write times. Naive means UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def aws_spot_action(action: str, when: datetime) -> str:
    """The body of ``/latest/meta-data/spot/instance-action`` for ``action`` at ``when``."""
    return json.dumps({"action": action, "time": rfc3339(when)})


def aws_defaults(
    server: MockMetadataServer,
    instance_id: str = "i-0123456789abcdef0",
    region: str = "us-east-1",
    life_cycle: str = "spot",
) -> None:
    """Fill in the identity paths the agent reads on an EC2 instance."""
    document = {
        "instanceId": instance_id,
        "region": region,
        "availabilityZone": f"{region}a",
        "instanceType": "m5.large",
        "accountId": "123456789012",
    }
    server.set("/latest/meta-data/instance-id", instance_id)
    server.set("/latest/meta-data/instance-life-cycle", life_cycle)
    server.set("/latest/dynamic/instance-identity/document", json.dumps(document, indent=2))


def alibaba_defaults(
    server: MockMetadataServer,
    instance_id: str = "i-bp13znx0m0me8cquu0001",
    region: str = "cn-hangzhou",
) -> None:
    """Fill in the identity paths the agent reads on an ECS instance."""
    server.set("/latest/meta-data/instance-id", instance_id)
    server.set("/latest/meta-data/region-id", region)


# -- running it on its own -------------------------------------------------------------------


class _Stop(Exception):
    """Raised from the signal handler to leave the main loop."""


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stop(signum)


def main(argv: Optional[list[str]] = None) -> int:
    """Serve in the foreground until SIGTERM/SIGINT, with the identity paths filled in."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.mock_metadata", description="Mock cloud instance metadata service."
    )
    parser.add_argument("--flavor", choices=sorted(FLAVORS), default="aws")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-token-required", dest="token_required", action="store_false")
    parser.add_argument("--instance-id")
    parser.add_argument("--region")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    server = MockMetadataServer(
        FLAVORS[args.flavor], args.host, args.port, token_required=args.token_required
    )
    identity = {k: v for k, v in (("instance_id", args.instance_id), ("region", args.region)) if v}
    (aws_defaults if server.flavor is AWS else alibaba_defaults)(server, **identity)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        print(f"listening on {server.url}", flush=True)
        while True:
            signal.pause()
    except _Stop:
        LOG.info("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
