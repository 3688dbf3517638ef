"""The Tencent spot watcher and shutdown-path check against the Tencent mock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from agent.clock import Clock
from agent.clouds._shared.token_client import MetadataError
from agent.clouds.tencent import CLOUD
from agent.clouds.tencent.config import TencentConfig
from agent.clouds.tencent.mock import FLAVOR_SPEC, defaults, termination_time
from agent.clouds.tencent.watchers import INSTANCE_ID, TERMINATION_TIME
from agent.mock import MockMetadataServer


@pytest.fixture
def tencent() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(FLAVOR_SPEC) as server:
        defaults(server, "ins-r8hr2upy")
        yield server


def section(url: str) -> TencentConfig:
    return TencentConfig(metadata_url=url, timeout=1.0)


def test_nothing_scheduled_then_a_reclaim(tencent):
    (watcher,) = CLOUD.watchers(section(tencent.url), Clock())
    assert watcher.poll() == []
    deadline = (datetime.now(timezone.utc) + timedelta(minutes=2)).replace(microsecond=0)
    tencent.set(TERMINATION_TIME, termination_time(deadline))
    (notice,) = watcher.poll()
    assert notice.deadline == deadline and notice.instance_id == "ins-r8hr2upy"
    assert len([r for r in tencent.requests if r.path == INSTANCE_ID]) == 1


def test_failures(tencent):
    (watcher,) = CLOUD.watchers(section(tencent.url), Clock())
    tencent.fail(1, 500)
    with pytest.raises(MetadataError, match="500"):
        watcher.poll()
    tencent.set(TERMINATION_TIME, "<html>oops</html>")
    with pytest.raises(ValueError):
        watcher.poll()
    tencent.set(INSTANCE_ID, None)
    (fresh,) = CLOUD.watchers(section(tencent.url), Clock())
    with pytest.raises(MetadataError, match="instance-id is missing"):
        fresh.poll()


def test_interrupted_now(tencent):
    assert CLOUD.interrupted_now(section(tencent.url), Clock(), 1.0) is None
    deadline = (datetime.now(timezone.utc) + timedelta(seconds=90)).replace(microsecond=0)
    tencent.set(TERMINATION_TIME, termination_time(deadline))
    notice = CLOUD.interrupted_now(section(tencent.url), Clock(), 1.0)
    assert notice is not None and notice.deadline == deadline


def test_interrupted_now_is_bounded(tencent):
    tencent.delay(5)
    started = time.monotonic()
    assert CLOUD.interrupted_now(section(tencent.url), Clock(), 0.5) is None
    assert time.monotonic() - started < 1.5
