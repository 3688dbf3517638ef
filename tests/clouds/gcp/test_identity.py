"""GCP: the instance's identity for webhooks (zone, its region, machine type) on the mock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.clock import Clock
from agent.clouds.gcp import GcpCloud, parse
from agent.clouds.gcp.config import GcpConfig
from agent.clouds.gcp.metadata import PREFIX
from agent.clouds.gcp.mock import GcpMockServer, defaults
from agent.clouds.gcp.watchers import INSTANCE_ZONE, MACHINE_TYPE

EXPECTED = {"region": "europe-west4", "zone": "europe-west4-b", "instance_type": "e2-medium"}


@pytest.fixture
def gcp() -> Iterator[GcpMockServer]:
    with GcpMockServer() as server:
        defaults(server, zone="europe-west4-b")
        yield server


def section(url: str) -> GcpConfig:
    return GcpConfig(metadata_url=url, timeout=1.0, wait_seconds=5)


def test_identity_reuses_the_zone_the_watchers_read(gcp):
    cloud = GcpCloud()
    conf = section(gcp.url)
    watcher = next(w for w in cloud.watchers(conf, Clock()) if w.name == "gcp-preempted")
    try:
        watcher.poll()  # a plain first GET: reads the id, name and zone
        assert cloud.identity(conf, Clock()) == EXPECTED
    finally:
        watcher.close()
    assert len([r for r in gcp.requests if r.path == PREFIX + INSTANCE_ZONE]) == 1
    machine = [r for r in gcp.requests if r.path == PREFIX + MACHINE_TYPE]
    assert len(machine) == 1 and machine[0].headers.get("Metadata-Flavor") == "Google"


def test_identity_before_any_poll_reads_the_zone_itself(gcp):
    assert GcpCloud().identity(section(gcp.url), Clock()) == EXPECTED


def test_without_a_machine_type_zone_and_region_are_still_given(gcp):
    gcp.set(PREFIX + MACHINE_TYPE, None)
    found = GcpCloud().identity(section(gcp.url), Clock())
    assert found == {"region": "europe-west4", "zone": "europe-west4-b"}


def test_a_failing_server_gives_nothing_and_does_not_raise(gcp):
    gcp.fail(10, 503)
    assert GcpCloud().identity(section(gcp.url), Clock()) == {}


@pytest.mark.parametrize(
    ("zone", "region"),
    [("us-central1-a", "us-central1"), ("europe-west4-b", "europe-west4"), ("zone", "")],
)
def test_region_of(zone, region):
    assert parse.region_of(zone) == region


@pytest.mark.parametrize(
    ("body", "machine_type"),
    [("projects/123/machineTypes/e2-medium", "e2-medium"), ("n2-standard-4\n", "n2-standard-4")],
)
def test_parse_machine_type(body, machine_type):
    assert parse.parse_machine_type(body) == machine_type


def test_parse_machine_type_refuses_garbage():
    with pytest.raises(ValueError):
        parse.parse_machine_type("<html>nope</html>")
