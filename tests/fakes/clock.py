"""A clock for provider tests: waits take no time, and the test sees every one of them."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from agent.clock import Clock

START = datetime(2026, 1, 5, 18, 0, 0, tzinfo=timezone.utc)


class FakeClock(Clock):
    """Monotonic and wall time move only when the code under test waits (or the test says).

    ``on_wait`` runs before each wait with the number of waits so far, so a test can change
    the world "during" a confirmation without threads or real sleeping.
    """

    def __init__(self, start: datetime = START) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._mono = 1000.0
        self._start = start
        self.waits: list[float] = []
        self.on_wait: Optional[Callable[[int], None]] = None

    def now(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._mono - 1000.0)

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += max(0.0, seconds)

    def sleep(self, seconds: float) -> bool:
        self.advance(seconds)
        return False

    def wait_for(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.waits.append(seconds)
        if self.on_wait is not None:
            self.on_wait(len(self.waits))
        self.advance(seconds)
        return event.is_set()
