"""Every registered cloud is whole: a package that gives all the core asks of it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from agent import clouds, notice
from agent.clock import Clock
from agent.clouds.alibaba import CLOUD as ALIBABA
from agent.clouds.alibaba import mock as alibaba_mock
from agent.clouds.aws import CLOUD as AWS
from agent.clouds.aws import mock as aws_mock
from agent.clouds.base import Cloud
from agent.config import Config
from agent.mock import MockMetadataServer, flavors


@pytest.mark.parametrize("name", clouds.names())
def test_a_registered_cloud_is_its_package(name: str) -> None:
    cloud = clouds.get(name)
    assert isinstance(cloud, Cloud)
    assert cloud.name == name
    assert clouds.REGISTRY[name] == type(cloud).__module__
    section = cloud.section()  # every setting has a default
    assert dataclasses.is_dataclass(section)
    assert Config().section(name) == section
    with pytest.raises(dataclasses.FrozenInstanceError):
        section.timeout = 1.0  # type: ignore[misc]


def test_an_unknown_cloud_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        clouds.get("vax")


@pytest.mark.parametrize("name", ["aws", "alibaba"])
def test_the_ec2_style_clouds_give_evidence_a_probe_and_a_mock(name: str) -> None:
    cloud = clouds.get(name)
    assert cloud.dmi
    probe = cloud.probe(cloud.section(metadata_url="http://127.0.0.1:9/"))
    assert probe is not None and probe.url == "http://127.0.0.1:9/latest/api/token"
    assert probe.method == "PUT" and probe.headers
    assert flavors()[name] is cloud.mock()
    assert cloud.api.endswith("API")


# -- the shutdown path's single question --------------------------------------------------------


@pytest.fixture
def imds() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(aws_mock.FLAVOR) as server:
        aws_mock.defaults(server)
        yield server


def in_minutes(minutes: float) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=minutes)


def test_aws_interrupted_now_sees_a_spot_termination(imds: MockMetadataServer) -> None:
    section = AWS.section(metadata_url=imds.url)
    assert AWS.interrupted_now(section, Clock(), 2.0) is None
    imds.set(
        "/latest/meta-data/spot/instance-action", aws_mock.spot_action("terminate", in_minutes(2))
    )
    found = AWS.interrupted_now(section, Clock(), 2.0)
    assert found is not None
    assert (found.provider, found.kind, found.action) == (
        "aws",
        notice.SPOT_INTERRUPTION,
        "terminate",
    )


def test_aws_interrupted_now_sees_an_auto_scaling_termination(imds: MockMetadataServer) -> None:
    imds.set("/latest/meta-data/autoscaling/target-lifecycle-state", "Terminated")
    found = AWS.interrupted_now(AWS.section(metadata_url=imds.url), Clock(), 2.0)
    assert found is not None and found.kind == notice.ASG_TERMINATION


def test_interrupted_now_gives_up_within_its_time(imds: MockMetadataServer) -> None:
    imds.delay(5)
    started = time.monotonic()
    assert AWS.interrupted_now(AWS.section(metadata_url=imds.url), Clock(), 1.0) is None
    assert time.monotonic() - started < 2.5
    imds.delay(0)


def test_alibaba_interrupted_now_sees_a_release() -> None:
    with MockMetadataServer(alibaba_mock.FLAVOR) as server:
        alibaba_mock.defaults(server)
        section = ALIBABA.section(metadata_url=server.url, interruption_behavior="stop")
        assert ALIBABA.interrupted_now(section, Clock(), 2.0) is None
        alibaba_mock.spot_notice(server, in_minutes(5), 0.0)
        found = ALIBABA.interrupted_now(section, Clock(), 2.0)
    assert found is not None and (found.provider, found.action) == ("alibaba", "stop")
