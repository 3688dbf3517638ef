"""A bounded HTTP request for link-local metadata services, on the stdlib ``http.client``.

A metadata service is a trusted address on an untrusted path: anything that answers there
(a misrouted packet, a proxy, a broken host agent) must never hold the agent longer than
the caller allows, fill its memory, or pull a token somewhere else. So every request here:

* is bounded as a whole by one deadline (connect, send, status line, headers, the whole
  body): the socket timeout is set to the time left before every read, so a body trickled
  a byte a second fails at the deadline, not a read timeout later;
* never follows a redirect: a 3xx is a failure (metadata services never redirect);
* sends no ``Accept-Encoding`` and refuses any ``Content-Encoding`` but ``identity``, so
  nothing is ever inflated;
* caps the body (:data:`MAX_BODY`, 64 KiB, unless the caller gives another cap): a bigger
  body fails naming the cap and is read no further;
* never goes through a proxy (``http.client`` reads no proxy settings from the
  environment);
* turns ``Retry-After`` into a finite number of seconds, clamped to the caller's cap.

A kept-alive connection keeps a poll cheap (an idle agent polls several paths twice a
second). A client is safe to share between threads: each thread gets its own connection,
so watchers polling in parallel never wait for one another's slow answer.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import math
import re
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone
from typing import Callable, Optional
from urllib.parse import urlsplit

from agent.clouds._shared.deadline_io import BodyTooLarge, Channel

LOG = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
"""Default body cap in bytes. Metadata answers are a few hundred bytes; a notice that does
not fit in 64 KiB is not a notice."""
HEADER_ALLOWANCE = 64 * 1024
"""What the status line and headers may add to the body cap before the read is cut off."""
DEFAULT_RETRY_AFTER_CAP = 300.0
"""Longest server-requested wait when the caller names no cap of its own."""

_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
"""What a header value sent here may hold: printable ASCII, no line breaks, no NUL."""

_FAILED_REUSE = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
)
"""What a kept-alive connection the server closed while idle looks like: retried once."""


class MetadataError(Exception):
    """A transient failure: the caller backs off and polls again; it never ends the daemon."""

    def __init__(
        self, message: str, retry_after: Optional[float] = None, *, answered: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.answered = answered
        """True when the service answered for the path itself (a status, an empty body),
        as opposed to a token or transport failure that every other path shares."""


class RequestError(MetadataError):
    """The request failed; ``kind`` says how (``connect``, ``timeout``, ``redirect``,
    ``too-large``, ``encoding``, ``protocol``). The text never carries a header value.
    A metadata failure like any other: callers need not translate it."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Response:
    """A complete answer: status, headers and the whole (capped) body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    retry_after: Optional[float]
    """``Retry-After`` in seconds, finite and clamped to the client's cap; None if absent
    or unreadable."""

    @property
    def text(self) -> str:
        """The body as text; bytes that are not UTF-8 become U+FFFD, never an exception."""
        return self.body.decode("utf-8", errors="replace")


def parse_retry_after(
    value: Optional[str], cap: float, now: Optional[float] = None
) -> Optional[float]:
    """``Retry-After`` (delay seconds or an HTTP-date) as seconds in ``[0, cap]``.

    Non-conforming values are clamped rather than obeyed: ``inf``, ``nan`` and anything
    above ``cap`` give ``cap``; negative values and dates in the past give 0. A value that
    is neither a number nor a date gives None (the caller's own backoff applies).
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64 or not text.isprintable():
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)  # "-0000": HTTP-dates are GMT anyway
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return cap
    return min(max(seconds, 0.0), cap)


def _where(location: str) -> str:
    """A redirect target fit for a log line: no user info, no query, no fragment."""
    try:
        parts = urlsplit(location.strip())
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        where = f"{parts.scheme}://{host}{parts.path}" if parts.scheme else parts.path
    except ValueError:
        where = "an unreadable location"
    where = where[:200]
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in where) or "nowhere"


class HttpClient:
    """Requests to one metadata service over a kept-alive connection.

    ``timeout`` bounds each request as a whole; ``max_body`` caps each body; every
    ``Retry-After`` is clamped to ``retry_after_cap`` seconds. Only ``http://`` URLs:
    metadata services are plain HTTP on a link-local address.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        max_body: int = MAX_BODY,
        retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
        wall: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"metadata URL must be http://HOST[:PORT]: {base_url!r}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds: {timeout!r}")
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.timeout = float(timeout)
        self.max_body = int(max_body)
        self.retry_after_cap = float(retry_after_cap)
        self._wall = wall
        self._local = threading.local()
        self._channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        self._channels_lock = threading.Lock()

    def _channel(self) -> Channel:
        channel: Optional[Channel] = getattr(self._local, "channel", None)
        if channel is None:
            channel = self._local.channel = Channel(self._host, self._port)
            with self._channels_lock:
                self._channels.add(channel)
        return channel

    def close(self) -> None:
        """Drop every kept-alive connection; the next request opens a new one. Meant for
        shutdown: a request in flight on another thread then fails."""
        with self._channels_lock:
            channels = list(self._channels)
        for channel in channels:
            channel.drop()

    def request(
        self,
        method: str,
        path: str,
        headers: Optional[Mapping[str, str]] = None,
        *,
        body: bytes = b"",
        timeout: Optional[float] = None,
    ) -> Response:
        """Send ``method path`` (with ``body``, if any) and read the whole answer within
        ``timeout`` (the client's by default). Any status but a 3xx is returned; raises
        :class:`RequestError`. Each thread has its own connection: a slow answer to one
        watcher never holds up another's request."""
        total = self.timeout if timeout is None else timeout
        channel = self._channel()
        channel.deadline.end = time.monotonic() + total
        try:
            return self._request(channel, method, path, dict(headers or {}), body)
        except RequestError:
            channel.drop()
            raise
        except (socket.timeout, TimeoutError):
            channel.drop()
            raise RequestError(
                f"{method} {path}: Timeout: no complete answer within {total:g} s", "timeout"
            ) from None
        except BodyTooLarge:
            channel.drop()
            raise RequestError(
                f"{method} {path}: answer larger than the {self.max_body}-byte cap",
                "too-large",
            ) from None
        except (http.client.HTTPException, ValueError) as exc:
            # ValueError: http.client refusing an illegal header value, or a bad length.
            channel.drop()
            raise RequestError(
                f"{method} {path}: malformed exchange ({type(exc).__name__})", "protocol"
            ) from None
        except OSError as exc:
            channel.drop()
            raise RequestError(
                f"{method} {path}: ConnectionError: {exc.strerror or type(exc).__name__}", "connect"
            ) from None
        finally:
            channel.deadline.end = math.inf

    def _request(
        self, channel: Channel, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> Response:
        reused = channel.conn is not None and channel.conn.sock is not None
        try:
            response = self._send(channel, method, path, headers, body)
        except _FAILED_REUSE:
            if not reused:
                raise
            # The server closed the idle connection: one fresh attempt, same deadline.
            channel.drop()
            response = self._send(channel, method, path, headers, body)
        try:
            return self._finish(method, path, response)
        finally:
            if not response.isclosed():
                # Unread bytes are left: the connection cannot carry another request.
                response.close()
                channel.drop()

    def _send(
        self, channel: Channel, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> http.client.HTTPResponse:
        conn = channel.connection()
        if conn.sock is None:
            conn.connect()
        channel.deadline.read = 0
        channel.deadline.limit = self.max_body + HEADER_ALLOWANCE
        conn.putrequest(method, self._prefix + path, skip_accept_encoding=True)
        for name, value in headers.items():
            if not _HEADER_VALUE.fullmatch(value):
                raise ValueError(f"header {name} holds a character it may not")
            conn.putheader(name, value)
        if body or method in ("PUT", "POST"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        return conn.getresponse()

    def _finish(self, method: str, path: str, response: http.client.HTTPResponse) -> Response:
        status = response.status
        if 300 <= status < 400:
            where = _where(response.headers.get("Location", ""))
            raise RequestError(f"{method} {path}: redirected to {where}, not followed", "redirect")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise RequestError(
                f"{method} {path}: compressed answer ({_where(encoding)}) refused", "encoding"
            )
        length = response.length
        if length is not None and length > self.max_body:
            raise BodyTooLarge()
        body = response.read(self.max_body + 1)
        if len(body) > self.max_body:
            raise BodyTooLarge()
        if not response.isclosed():
            # Exactly max_body bytes were asked for and more may follow: make sure of it.
            if response.read(1):
                raise BodyTooLarge()
        retry_after = parse_retry_after(
            response.headers.get("Retry-After"), self.retry_after_cap, self._wall()
        )
        return Response(status, response.headers, body, retry_after)
