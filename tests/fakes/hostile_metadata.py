"""A metadata service that misbehaves on request: a real HTTP server on loopback.

Each path answers with a scripted :class:`Reply`: slow or trickled bodies, redirects,
compressed bombs, huge bodies, absurd ``Retry-After`` values, control characters in
headers and bodies, or no answer at all. Answers are written as raw bytes, so a reply can
break HTTP in ways a well-behaved server library would refuse to.

The token flow of the EC2 protocol (``PUT /latest/api/token``, then the token on every GET)
is built in (:meth:`HostileMetadata.aws`), so the real agent process can run against it.
"""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Callable, Optional, Union

from tests.fakes.background import BackgroundServer

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path
SPOT = "/latest/meta-data/spot/instance-action"
INSTANCE_ID = "/latest/meta-data/instance-id"
AWS_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
AWS_TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
REASONS = {200: "OK", 301: "Moved", 302: "Found", 307: "Temporary Redirect", 404: "Not Found"}


@dataclass
class Reply:
    """One scripted answer.

    ``length``: ``"auto"`` sends the body's length, ``None`` sends none (the body ends when
    the connection closes), a number is sent as is (a lie, if the caller wants one).
    ``stream`` replaces ``body`` with chunks produced while sending (huge bodies never sit
    in memory). ``trickle`` sends the body one byte at a time, that many seconds apart.
    ``hang`` reads the request and never answers; ``raw`` is written verbatim (trickled
    too, if asked) instead of any of the above. ``chunked`` sends the body in chunked
    encoding; ``close`` closes the connection after the answer without saying so.
    """

    status: int = 200
    body: Union[bytes, str] = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: Union[str, int, None] = "auto"
    stream: Optional[Callable[[], Iterable[bytes]]] = None
    trickle: float = 0.0
    hang: bool = False
    raw: Optional[bytes] = None
    chunked: bool = False
    close: bool = False

    def body_bytes(self) -> bytes:
        return self.body.encode() if isinstance(self.body, str) else self.body


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it (``time`` on the monotonic clock)."""

    method: str
    path: str
    headers: dict[str, str]
    time: float
    peer: tuple = ()
    body: bytes = b""


Route = Union[Reply, Callable[[Seen], Reply]]


def redirect(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", [("Location", location)])


def retry_after(value: str, status: int = 429) -> Reply:
    return Reply(status, b"slow down", [("Retry-After", value)])


def trickled(body: Union[bytes, str], every: float = 1.0) -> Reply:
    return Reply(200, body, trickle=every)


def huge(size: int, chunk: int = 1 << 20, declare: bool = True) -> Reply:
    """``size`` bytes of JSON-looking filler, produced while sending."""

    def chunks() -> Iterator[bytes]:
        left = size
        block = b" " * chunk
        while left > 0:
            yield block[: min(left, chunk)]
            left -= chunk

    return Reply(200, stream=chunks, length=size if declare else None)


@functools.lru_cache(maxsize=4)
def gzip_bomb_bytes(inflated: int) -> bytes:
    """A gzip stream of ``inflated`` zero bytes (about a thousandth of that compressed)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    parts = []
    for _ in range(inflated // len(block)):
        parts.append(packer.compress(block))
    parts.append(packer.flush())
    return b"".join(parts)


def gzip_bomb(inflated: int = 100 << 20, declared: bool = True) -> Reply:
    """A small body that inflates to ``inflated`` bytes, labelled gzip unless ``declared``
    is false (then it is just binary noise)."""
    headers = [("Content-Encoding", "gzip")] if declared else []
    return Reply(200, gzip_bomb_bytes(inflated), headers)


def spot_action(action: object = "terminate", when: str = "2030-01-01T00:00:00Z") -> str:
    """An AWS spot instance-action body; ``action`` may be anything JSON can hold."""
    return json.dumps({"action": action, "time": when})


class _Handler(BaseHTTPRequestHandler):
    owner: HostileMetadata
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # One answer, one segment: no Nagle pause between the head and the body.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass  # the client hung up, as a bounded client does

    def _serve(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(min(length, 1 << 20)) if length else b""
        seen = Seen(
            self.command,
            self.path,
            dict(self.headers.items()),
            time.monotonic(),
            tuple(self.client_address),
            sent,
        )
        reply = owner.reply_for(seen)
        try:
            self._answer(reply)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

    def _answer(self, reply: Reply) -> None:
        released = self.owner.released
        if reply.hang:
            released.wait(120)
            self.close_connection = True
            return
        if reply.raw is not None:
            self._write(reply.raw, reply.trickle)
            self.close_connection = True
            return
        body = b"" if reply.stream else reply.body_bytes()
        length = len(body) if reply.length == "auto" else reply.length
        if reply.chunked:
            length = None
            reply.headers = [*reply.headers, ("Transfer-Encoding", "chunked")]
        head = f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Whatever')}\r\n".encode()
        for name, value in reply.headers:
            head += name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"
        if length is not None:
            head += f"Content-Length: {length}\r\n".encode()
        elif not reply.chunked:
            head += b"Connection: close\r\n"
            self.close_connection = True
        head += b"\r\n"
        if reply.stream is None and not reply.trickle and not reply.chunked:
            self.wfile.write(head + (b"" if self.command == "HEAD" else body))
            self.close_connection = self.close_connection or reply.close
            return
        self.wfile.write(head)
        if reply.close:
            self.close_connection = True
        if self.command == "HEAD":
            return
        chunks = reply.stream() if reply.stream is not None else [body]
        for chunk in chunks:
            if released.is_set():
                self.close_connection = True
                return
            framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if reply.chunked and chunk else chunk
            self._write(framed, reply.trickle)
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, data: bytes, trickle: float) -> None:
        if not trickle:
            self.wfile.write(data)
            return
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            if self.owner.released.wait(trickle):
                self.close_connection = True
                return


class HostileMetadata(BackgroundServer):
    """Routes by (method, path); anything unscripted answers 404, like a metadata service
    with nothing pending. Every request is recorded in :attr:`requests`."""

    handler = _Handler

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[Seen] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        self.token: Optional[str] = None

    def set(self, path: str, reply: Route, method: str = "GET") -> None:
        with self._lock:
            self.routes[(method, path)] = reply

    def clear(self, path: str, method: str = "GET") -> None:
        with self._lock:
            self.routes.pop((method, path), None)

    def aws(self, instance_id: str = "i-0123456789abcdef0", token: str = "hostile-token") -> None:  # noqa: S107
        """The IMDSv2 token flow and an instance id; GETs without the token answer 401."""
        self.token = token
        self.set(TOKEN_PATH, Reply(200, token), "PUT")
        self.set(INSTANCE_ID, Reply(200, instance_id))

    def reply_for(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            route = self.routes.get((seen.method, seen.path.split("?", 1)[0]))
            token = self.token
        if route is None:
            if token is not None and seen.method == "GET":
                if seen.headers.get(AWS_TOKEN_HEADER) != token:
                    return Reply(401, b"")
            return Reply(404, b"Not Found")
        if (
            token is not None
            and seen.method == "GET"
            and seen.headers.get(AWS_TOKEN_HEADER) != token
        ):
            return Reply(401, b"")
        return route(seen) if callable(route) else route

    def seen(self, path: str, method: Optional[str] = None) -> list[Seen]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path.split("?", 1)[0] == path and (method is None or r.method == method)
            ]

    def stop(self) -> None:
        self.released.set()
        super().stop()
