"""``http.client`` plumbing under one deadline: the connection, its sends and every read of
the answer share the request's end, and the bytes one answer may take are capped.

:mod:`agent.clouds._shared.http` builds its bounded request on these.
"""

from __future__ import annotations

import functools
import http.client
import io
import math
import socket
import time
from typing import Optional


class Deadline:
    """The end of the request in flight, shared by the connection and its reader."""

    def __init__(self) -> None:
        self.end = math.inf
        self.limit = math.inf
        self.read = 0

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise socket.timeout("deadline reached")
        return left


class BodyTooLarge(Exception):
    pass


class DeadlineReader(io.RawIOBase):
    """The socket's raw reader with the timeout reset to the time left before every read,
    and a hard stop on the bytes one response may take."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        deadline = self._deadline
        if deadline.read > deadline.limit:
            raise BodyTooLarge()
        self._sock.settimeout(deadline.left())
        count = self._raw.readinto(buffer) or 0
        deadline.read += count
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()


class _ResponseFile:
    """What ``HTTPResponse`` calls ``makefile`` on, so it reads through the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._file = io.BufferedReader(DeadlineReader(sock, deadline))

    def makefile(self, mode: str) -> io.BufferedReader:
        return self._file


class _Response(http.client.HTTPResponse):
    def __init__(
        self,
        sock: socket.socket,
        debuglevel: int = 0,
        method: Optional[str] = None,
        url: Optional[str] = None,
        *,
        deadline: Deadline,
    ) -> None:
        super().__init__(_ResponseFile(sock, deadline), debuglevel, method, url)  # type: ignore[arg-type]


class Connection(http.client.HTTPConnection):
    """``HTTPConnection`` whose connect, sends and reads all share one deadline."""

    def __init__(self, host: str, port: Optional[int], deadline: Deadline) -> None:
        super().__init__(host, port)
        self.deadline = deadline
        self.response_class = functools.partial(_Response, deadline=deadline)  # type: ignore[assignment]

    def connect(self) -> None:
        self.timeout = self.deadline.left()
        super().connect()

    def send(self, data: object) -> None:
        if self.sock is not None:
            self.sock.settimeout(self.deadline.left())
        super().send(data)  # type: ignore[arg-type]


class Channel:
    """One thread's connection to the service and the deadline of its request in flight."""

    def __init__(self, host: str, port: Optional[int]) -> None:
        self.host = host
        self.port = port
        self.deadline = Deadline()
        self.conn: Optional[Connection] = None

    def connection(self) -> Connection:
        if self.conn is None:
            self.conn = Connection(self.host, self.port, self.deadline)
        return self.conn

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def __del__(self) -> None:
        # The thread that owned it ended: close its socket rather than leave it to the GC.
        self.drop()
