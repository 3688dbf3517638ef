"""A webhook receiver on loopback: records each POST, answers as the test scripts it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional

from tests.fakes.background import BackgroundServer


class _Handler(BaseHTTPRequestHandler):
    owner: Receiver

    def do_POST(self) -> None:
        owner = self.owner
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with owner.lock:
            owner.requests.append(
                {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": data,
                    "at": time.monotonic(),
                }
            )
            status = owner.statuses.pop(0) if owner.statuses else 200
        if owner.hang:
            owner.release.wait(30)
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", f"{owner.url}/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver(BackgroundServer):
    """``statuses``: the answers to the first attempts (then 200); ``hang``: never answer
    until the test ends."""

    handler = _Handler

    def __init__(self, statuses: Optional[list[int]] = None, hang: bool = False) -> None:
        super().__init__()
        self.statuses = list(statuses or [])
        self.hang = hang
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []

    def bodies(self) -> list[Any]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def stop(self) -> None:
        self.release.set()
        super().stop()
