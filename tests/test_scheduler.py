"""The poll scheduler: capped waits, results in the inbox, a slow watcher holding up no other."""

from __future__ import annotations

import threading
import time

import pytest

from agent.clouds.base import Watcher
from agent.notice import Notice
from agent.presence import GONE_POLLS
from agent.scheduler import Inbox, Polled, Poller, Scheduler, retry_delay
from tests.waiting import wait_until


class Failing(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__("answered 429")
        self.retry_after = retry_after


class Scripted(Watcher):
    def __init__(self, name: str, interval: float = 0.01, max_backoff: float = 10.0) -> None:
        self.name = name
        self.interval = interval
        self.max_backoff = max_backoff
        self.raise_: Exception | None = None
        self.block = threading.Event()
        self.blocking = False
        self.polls = 0

    def poll(self) -> list[Notice]:
        self.polls += 1
        if self.blocking:
            self.block.wait(30)
        if self.raise_ is not None:
            raise self.raise_
        return []


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 1.0), (3.0, 3.0), (99999.0, 10.0), (float("inf"), 1.0), (float("nan"), 1.0), (-5, 1.0)],
)
def test_a_servers_wait_is_honoured_up_to_the_cap(retry_after: object, expected: float) -> None:
    assert retry_delay(1.0, retry_after, 10.0) == expected


def test_a_failed_poll_posts_a_failure_and_waits_at_most_max_backoff() -> None:
    inbox = Inbox()
    watcher = Scripted("spot", interval=0.5, max_backoff=10.0)
    watcher.raise_ = Failing(99999)
    poller = Poller(watcher, inbox, time.monotonic, threading.Event())
    assert poller.poll_once() == 10.0
    assert inbox.wait(0) == [Polled("spot", False)]
    watcher.raise_ = None
    assert poller.poll_once() == 0.5
    assert inbox.wait(0) == [Polled("spot", True, ())]


def test_the_inbox_wakes_a_waiting_loop_at_once() -> None:
    inbox = Inbox()
    threading.Timer(0.05, inbox.post, args=("hello",)).start()
    started = time.monotonic()
    assert inbox.wait(10.0) == ["hello"]
    assert time.monotonic() - started < 5.0


def test_a_hanging_watcher_holds_up_no_other() -> None:
    inbox = Inbox()
    slow, fast = Scripted("slow"), Scripted("fast")
    slow.blocking = True
    scheduler = Scheduler([slow, fast], inbox, time.monotonic)
    scheduler.start()
    try:
        wait_until(lambda: fast.polls >= 5, 10, "the fast watcher to keep polling")
        assert slow.polls == 1
    finally:
        scheduler.stop()
        slow.block.set()


def test_a_quiet_watcher_stops_waking_the_loop_once_presence_has_its_answers() -> None:
    inbox = Inbox()
    polls: list[tuple[str, bool]] = []
    watcher = Scripted("spot")
    poller = Poller(
        watcher, inbox, time.monotonic, threading.Event(), lambda n, ok: polls.append((n, ok))
    )
    for _ in range(5):
        poller.poll_once()
    assert len(inbox.wait(0)) == GONE_POLLS, "the same empty answer, told as often as needed"
    assert polls == [("spot", True)] * 5, "metrics hear every poll"
    watcher.raise_ = Failing(None)
    poller.poll_once()
    watcher.raise_ = None
    poller.poll_once()
    assert inbox.wait(0) == [Polled("spot", False), Polled("spot", True, ())]
