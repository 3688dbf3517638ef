"""An HTTP proxy in front of moto that answers chosen EC2 actions with an error N times.

moto answers like EC2 but never throttles and never lags; real EC2 does both. Faults are
queued per action (``DescribeInstances``, ...) and sent as EC2's own XML error document,
so botocore parses them exactly as it would a real one. Everything else is passed through.
"""

from __future__ import annotations

import http.client
import threading
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from tests.fakes.background import BackgroundServer

ERROR_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>\
<RequestID>5ec0a1e5-0000-4000-8000-000000000000</RequestID></Response>"""


@dataclass
class Fault:
    code: str
    status: int
    message: str


class FaultProxy(BackgroundServer):
    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = defaultdict(list)
        self.actions: list[tuple[str, str]] = []  # (action, "passed" or the error code)

    def inject(
        self, action: str, code: str, status: int, count: int = 1, message: str = ""
    ) -> None:
        with self._lock:
            self._faults[action].extend([Fault(code, status, message or code)] * count)

    def seen(self, action: Optional[str] = None) -> list[tuple[str, str]]:
        with self._lock:
            return [a for a in self.actions if action is None or a[0] == action]

    def _take(self, action: str) -> Optional[Fault]:
        with self._lock:
            queue = self._faults.get(action)
            fault = queue.pop(0) if queue else None
            self.actions.append((action, fault.code if fault else "passed"))
            return fault

    def _forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=10)
        try:
            conn.request(method, path, body=body, headers=dict(headers.items()))
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        action = (parse_qs(body.decode("utf-8", "replace")).get("Action") or ["?"])[0]
        fault = self.owner._take(action)
        if fault is not None:
            data = ERROR_XML.format(code=fault.code, message=fault.message).encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "text/xml;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        status, headers, data = self.owner._forward("POST", self.path, self.headers, body)
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in (
                "content-length",
                "transfer-encoding",
                "connection",
                "server",
                "date",
            ):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


FaultProxy.handler = _Handler
