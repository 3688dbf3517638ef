"""Tencent: the instance's placement and type for webhooks, on the Tencent mock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.clock import Clock
from agent.clouds.tencent import TencentCloud
from agent.clouds.tencent.config import TencentConfig
from agent.clouds.tencent.mock import FLAVOR_SPEC, defaults
from agent.clouds.tencent.watchers import INSTANCE_TYPE, PLACEMENT_REGION, PLACEMENT_ZONE
from agent.mock import MockMetadataServer

EXPECTED = {"region": "ap-shanghai", "zone": "ap-shanghai-3", "instance_type": "SA2.MEDIUM2"}


@pytest.fixture
def tencent() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(FLAVOR_SPEC) as server:
        defaults(server, "ins-r8hr2upy", region="ap-shanghai")
        yield server


def section(url: str) -> TencentConfig:
    return TencentConfig(metadata_url=url, timeout=1.0)


def test_identity_through_the_watchers_client(tencent):
    cloud = TencentCloud()
    conf = section(tencent.url)
    (watcher,) = cloud.watchers(conf, Clock())
    assert watcher.poll() == []
    assert cloud.identity(conf, Clock()) == EXPECTED
    for path in (PLACEMENT_REGION, PLACEMENT_ZONE, INSTANCE_TYPE):
        assert len([r for r in tencent.requests if r.path == path]) == 1, path


def test_identity_without_watchers(tencent):
    assert TencentCloud().identity(section(tencent.url), Clock()) == EXPECTED


def test_a_missing_path_leaves_only_its_key_out(tencent):
    tencent.set(INSTANCE_TYPE, None)
    found = TencentCloud().identity(section(tencent.url), Clock())
    assert found == {"region": "ap-shanghai", "zone": "ap-shanghai-3"}


def test_a_failing_service_gives_nothing_and_does_not_raise(tencent):
    tencent.fail(5, 500)
    assert TencentCloud().identity(section(tencent.url), Clock()) == {}
