"""Every cloud's identity against its own mock flavour: all three keys, bounded, never raising."""

from __future__ import annotations

import time

import pytest

from agent import clouds
from agent.clock import Clock
from agent.clouds.base import IDENTITY_KEYS, MAX_IDENTITY_VALUE, identity_values


@pytest.mark.parametrize("name", clouds.names())
def test_each_mock_flavour_answers_the_identity(name):
    cloud = type(clouds.get(name))()  # a fresh one: no watcher state from other tests
    flavour = cloud.mock()
    assert flavour is not None
    with flavour.make_server() as server:
        flavour.defaults(server)
        section = cloud.section(metadata_url=server.url, timeout=1.0)
        found = cloud.identity(section, Clock())
    assert set(found) == set(IDENTITY_KEYS), found
    assert all(isinstance(v, str) and v for v in found.values())


@pytest.mark.parametrize("name", clouds.names())
def test_a_hung_service_gives_up_within_a_few_timeouts(name):
    cloud = type(clouds.get(name))()
    flavour = cloud.mock()
    assert flavour is not None
    with flavour.make_server() as server:
        flavour.defaults(server)
        server.delay(5)
        section = cloud.section(metadata_url=server.url, timeout=0.2)
        started = time.monotonic()
        found = cloud.identity(section, Clock())
        took = time.monotonic() - started
        server.delay(0)
    assert found == {}
    assert took < 1.5, f"{name} took {took:.1f} s"


def test_identity_values_keeps_only_usable_known_keys():
    assert identity_values(
        region=" us-east-1 ",
        zone="",
        instance_type="x" * (MAX_IDENTITY_VALUE + 1),
    ) == {"region": "us-east-1"}
    assert identity_values(region=None, zone="a\x00b", instance_type="m5.large") == {
        "instance_type": "m5.large"
    }
    assert identity_values(hostname="h", region="r") == {"region": "r"}


def test_a_cloud_gives_no_identity_by_default():
    from agent.clouds.base import Cloud

    class Bare(Cloud):
        name = "bare"
        section = object

        def watchers(self, section, clock):
            return []

    assert Bare().identity(None, Clock()) == {}
