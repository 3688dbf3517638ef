"""The HTTP side of the mock metadata service: sockets, keep-alive, method dispatch.

What to answer is decided by :class:`agent.mock.server.MockMetadataServer`.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.mock.server import MockMetadataServer

LOG = logging.getLogger(__name__)

Answer = tuple[int, str, str, dict[str, str]]
"""Status, body, content type, extra headers."""


class MockHTTPServer(ThreadingHTTPServer):
    """One listening socket; ``accept()`` after ``refuse()`` makes a new one on the same port."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], mock: MockMetadataServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.mock = mock
        self.closing = threading.Event()  # set when this socket goes away; cuts delays short
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (or refuse() cutting it off) is routine here.
        LOG.debug("error while serving %s", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services
    timeout = 30  # idle keep-alive connections must not pin a thread forever
    # Headers and body go out in two writes; with Nagle on, a kept-alive client waits for
    # its delayed ACK (about 40 ms) on every answer after the first.
    disable_nagle_algorithm = True
    server: MockHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        # The request line never carries the token (it is a header), so this is safe to log.
        LOG.debug("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.server.mock.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.mock.track(self.connection, False)

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
        answer = self.server.mock.answer(self.command, self.path, self.headers, raw, self.server)
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


def text(status: int, message: str) -> Answer:
    return status, message + "\n", "text/plain", {}


def json_ok() -> Answer:
    return 200, '{"ok": true}', "application/json", {}
