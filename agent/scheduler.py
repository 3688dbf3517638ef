"""Polling: one thread per watcher, each on its own interval and backoff, and one inbox.

A watcher's request can be slow (a hanging GET on GCP, a trickled answer from a hostile
service), so each polls from its own thread: no watcher can hold up another, the loop, the
watchdog or a signal. Results go to the :class:`Inbox`, which wakes the loop through a pipe
that signals write to as well (``signal.set_wakeup_fd``), so the loop sleeps until something
happens instead of waking on a timer.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import select
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from agent.backoff import Backoff
from agent.clouds.base import Watcher
from agent.notice import Notice
from agent.presence import GONE_POLLS
from agent.ratelimit import RateLimitedLog

LOG = logging.getLogger(__name__)

FAILURE_LOG_EVERY = 60.0


class Inbox:
    """Messages from threads to the loop; posting never blocks, the loop waits on a pipe."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)

    @property
    def wakeup_fd(self) -> int:
        """For ``signal.set_wakeup_fd``: a signal then ends :meth:`wait` at once."""
        return self._write

    def post(self, item: Any) -> None:
        self._items.append(item)
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write, b"\0")

    def wait(self, timeout: Optional[float]) -> list[Any]:
        """What arrived, after waiting up to ``timeout`` seconds (None: until something does)."""
        if not self._items:
            with contextlib.suppress(InterruptedError):
                select.select([self._read], [], [], None if timeout is None else max(0.0, timeout))
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._read, 512):
                pass
        items = []
        while self._items:
            items.append(self._items.popleft())
        return items

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(frozen=True)
class Polled:
    """One poll's result: the notices present (ok), or a failure (not ok)."""

    watcher: str
    ok: bool
    notices: tuple[Notice, ...] = ()


def _schedule(watcher: Watcher) -> str:
    if watcher.interval > 0:
        return f"{watcher.name} every {watcher.interval:g}s"
    return f"{watcher.name} (waiting for changes)"


def _failure_kind(exc: BaseException) -> str:
    """Failures alike for log rate limiting: same type, same text once digits are dropped."""
    return type(exc).__name__ + "".join(c for c in str(exc)[:80] if not c.isdigit())


def retry_delay(backoff: float, retry_after: Any, cap: float) -> float:
    """How long a failing watcher waits: its backoff, or longer if the server asked, never more
    than ``cap`` (a ``Retry-After: 99999`` must not switch detection off)."""
    delay = backoff
    if isinstance(retry_after, (int, float)) and math.isfinite(retry_after):
        delay = max(delay, float(retry_after))
    return max(0.0, min(delay, cap))


class Poller:
    """Polls one watcher in its own thread until stopped.

    Every result is told to ``on_poll`` (metrics, from this thread); the loop is woken only
    for what it can act on: a failure, notices, or a change, then the same quiet answer
    ``GONE_POLLS`` times (presence counts those to see a notice gone). A quiet watcher
    then costs the loop nothing.
    """

    def __init__(
        self,
        watcher: Watcher,
        inbox: Inbox,
        monotonic: Callable[[], float],
        stop: threading.Event,
        on_poll: Callable[[str, bool], None] = lambda name, ok: None,
    ) -> None:
        self.watcher = watcher
        self.inbox = inbox
        self.stop = stop
        self.on_poll = on_poll
        self._quiet = 0  # identical empty answers posted in a row
        cap = max(watcher.interval, watcher.max_backoff)
        self.backoff = Backoff(max(watcher.interval, 0.5), cap)
        self.cap = cap
        self.failures = RateLimitedLog(LOG, FAILURE_LOG_EVERY, monotonic)
        self.thread = threading.Thread(target=self._run, name=f"poll-{watcher.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        watcher = self.watcher
        while not self.stop.is_set():
            delay = self.poll_once()
            if self.stop.wait(delay):
                break
        with contextlib.suppress(Exception):
            watcher.close()

    def poll_once(self) -> float:
        """Poll, post the result, and return how long to wait before the next poll."""
        watcher = self.watcher
        try:
            notices = watcher.poll()
        except Exception as exc:
            delay = retry_delay(
                self.backoff.next_delay(), getattr(exc, "retry_after", None), self.cap
            )
            self.failures.failure(
                "%s: %s; retrying in %.1f s", watcher.name, exc, delay, key=_failure_kind(exc)
            )
            self.on_poll(watcher.name, False)
            self._quiet = 0
            self.inbox.post(Polled(watcher.name, False))
            return delay
        self.backoff.reset()
        self.failures.recovered("%s: metadata answers again", watcher.name)
        self.on_poll(watcher.name, True)
        if notices:
            self._quiet = 0
        elif self._quiet >= GONE_POLLS:
            return watcher.interval  # nothing new since the loop last heard: let it sleep
        else:
            self._quiet += 1
        self.inbox.post(Polled(watcher.name, True, tuple(notices)))
        return watcher.interval


class Scheduler:
    """Every watcher's poller, started and stopped together."""

    def __init__(
        self,
        watchers: list[Watcher],
        inbox: Inbox,
        monotonic: Callable[[], float],
        on_poll: Callable[[str, bool], None] = lambda name, ok: None,
    ):
        self.stop_event = threading.Event()
        self.pollers = [Poller(w, inbox, monotonic, self.stop_event, on_poll) for w in watchers]

    @property
    def names(self) -> list[str]:
        return [p.watcher.name for p in self.pollers]

    def describe(self) -> str:
        return ", ".join(_schedule(p.watcher) for p in self.pollers)

    def start(self) -> None:
        for poller in self.pollers:
            poller.start()

    def stop(self) -> None:
        self.stop_event.set()
