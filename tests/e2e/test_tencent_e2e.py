"""The real agent process against the Tencent Cloud metadata mock on loopback."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from agent import exitcodes
from agent.clouds.tencent.mock import FLAVOR_SPEC, defaults, termination_time
from agent.clouds.tencent.watchers import TERMINATION_TIME
from agent.mock import MockMetadataServer, rfc3339

CONFIG = """
confirm = false
[tencent]
metadata_url = "@URL@"
timeout = 1.0
max_backoff = 1.0
[tencent.spot]
interval = 0.2
"""


@pytest.fixture
def tencent() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(FLAVOR_SPEC) as server:
        defaults(server, "ins-r8hr2upy")
        yield server


def test_a_reclaim_drains_once_with_the_deadline_converted_from_utc8(tencent, hooks, start_agent):
    hooks.add("10-drain")
    agent = start_agent("tencent", tencent.url, CONFIG)
    agent.wait_for_log("watching tencent")
    deadline = (datetime.now(timezone.utc) + timedelta(seconds=60)).replace(microsecond=0)
    body = termination_time(deadline)
    tencent.set(TERMINATION_TIME, body)

    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1
    env = hooks.env("10-drain")
    assert env["PREEMPT_PROVIDER"] == "tencent"
    assert env["PREEMPT_KIND"] == "spot-interruption"
    assert env["PREEMPT_INSTANCE_ID"] == "ins-r8hr2upy"
    assert env["PREEMPT_EVENT_ID"] == "tencent:ins-r8hr2upy:spot-interruption"
    assert env["PREEMPT_DEADLINE"] == rfc3339(deadline)
    assert 55 <= int(env["PREEMPT_SECONDS_LEFT"]) <= 60
    assert hooks.stdin("10-drain")["raw"] == body


def test_nothing_scheduled_is_no_drain(tencent, hooks, start_agent):
    hooks.add("10-drain")
    agent = start_agent("tencent", tencent.url, CONFIG)
    agent.wait_for_log("watching tencent")
    seen = len(tencent.requests)
    tencent.wait_for_request(lambda r: r.path == TERMINATION_TIME, 10, start=seen + 3)
    agent.signal(signal.SIGTERM)
    assert agent.wait() == exitcodes.FINISHED
    assert hooks.starts("10-drain") == []
