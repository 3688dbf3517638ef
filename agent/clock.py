"""Time as the agent sees it, injectable so that deadlines can be tested without waiting."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class Clock:
    """Wall time for deadlines, monotonic time for intervals, and an interruptible sleep.

    Deadlines arrive as wall-clock UTC and are turned into monotonic time once, when a
    notice is seen; every wait is then done on the monotonic clock, so a later clock step
    (NTP) cannot stretch or shrink a hook's time. The wall clock is trusted at that moment:
    the unit orders itself after time-sync.target.
    """

    def __init__(self) -> None:
        self._wake = threading.Event()

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True when woken early by :meth:`wake`."""
        woken = self._wake.wait(max(0.0, seconds))
        self._wake.clear()
        return woken

    def wait_for(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``event``; True when it is set.

        For waits outside the main loop (a confirmation in a worker thread): they must not
        share :meth:`sleep`'s wake-up event, and a test clock can make them take no time.
        """
        return event.wait(max(0.0, seconds))

    def wake(self) -> None:
        """End the current :meth:`sleep` early (from a signal handler or another thread)."""
        self._wake.set()

    def monotonic_at(self, when: datetime) -> float:
        """The monotonic time that corresponds to the wall-clock instant ``when``."""
        return self.monotonic() + (when - self.now()).total_seconds()


def utc_rfc3339(when: datetime) -> str:
    """``2017-09-18T08:22:00Z``: the form hooks and logs get."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
