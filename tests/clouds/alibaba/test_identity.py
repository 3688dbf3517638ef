"""Alibaba: the instance's identity for webhooks, on the hardened-mode mock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from agent.clock import Clock
from agent.clouds.alibaba import AlibabaCloud
from agent.clouds.alibaba.config import AlibabaConfig
from agent.clouds.alibaba.mock import FLAVOR, defaults
from agent.clouds.alibaba.watchers import INSTANCE_TYPE, REGION_ID, ZONE_ID
from agent.mock import MockMetadataServer

EXPECTED = {"region": "cn-shanghai", "zone": "cn-shanghai-b", "instance_type": "ecs.g6.large"}


@pytest.fixture
def ecs() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(FLAVOR) as server:
        defaults(server, region="cn-shanghai")
        yield server


def section(url: str, timeout: float = 1.0) -> AlibabaConfig:
    return AlibabaConfig(metadata_url=url, timeout=timeout, max_backoff=1.0)


def test_identity_reuses_the_region_the_watchers_read(ecs):
    cloud = AlibabaCloud()
    conf = section(ecs.url)
    (spot,) = cloud.watchers(conf, Clock())
    spot.poll()
    assert cloud.identity(conf, Clock()) == EXPECTED
    assert cloud.identity(conf, Clock()) == EXPECTED, "asked again: from the cache"
    for path in (REGION_ID, ZONE_ID, INSTANCE_TYPE):
        assert len([r for r in ecs.requests if r.path == path]) == 1, path
    gets = [r for r in ecs.requests if r.method == "GET"]
    assert all(r.headers.get(FLAVOR.token_header) for r in gets), "hardened mode: a token"
    assert len([r for r in ecs.requests if r.method == "PUT"]) == 1


def test_identity_without_watchers(ecs):
    assert AlibabaCloud().identity(section(ecs.url), Clock()) == EXPECTED


def test_a_missing_item_leaves_only_its_key_out(ecs):
    ecs.set(ZONE_ID, None)
    found = AlibabaCloud().identity(section(ecs.url), Clock())
    assert found == {"region": "cn-shanghai", "instance_type": "ecs.g6.large"}


def test_a_failing_service_gives_nothing_and_does_not_raise(ecs):
    ecs.fail(20, 500)
    assert AlibabaCloud().identity(section(ecs.url), Clock()) == {}


def test_a_poll_and_the_identity_at_once_read_region_id_once(ecs):
    cloud = AlibabaCloud()
    conf = section(ecs.url)
    (spot,) = cloud.watchers(conf, Clock())
    ecs.delay(0.2)  # both are in flight together
    polled = threading.Thread(target=spot.poll)
    polled.start()
    found = cloud.identity(conf, Clock())
    polled.join(5)
    ecs.delay(0)
    assert found == EXPECTED
    assert len([r for r in ecs.requests if r.path == REGION_ID]) == 1
