"""AWS: the instance's identity for webhooks, from the identity document on the IMDSv2 mock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from agent.clock import Clock
from agent.clouds.aws import AwsCloud
from agent.clouds.aws import watchers as aws
from agent.clouds.aws.config import AwsConfig
from agent.clouds.aws.mock import FLAVOR, defaults
from agent.mock import MockMetadataServer

EXPECTED = {"region": "eu-west-1", "zone": "eu-west-1a", "instance_type": "m5.large"}


@pytest.fixture
def imds() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(FLAVOR) as server:
        defaults(server, region="eu-west-1")
        yield server


def section(url: str, timeout: float = 1.0) -> AwsConfig:
    return AwsConfig(metadata_url=url, timeout=timeout, max_backoff=1.0)


def document(**changes: object) -> str:
    doc: dict[str, object] = {
        "instanceId": "i-0123456789abcdef0",
        "region": "eu-west-1",
        "availabilityZone": "eu-west-1a",
        "instanceType": "m5.large",
    }
    doc.update(changes)
    return json.dumps(doc)


def test_identity_comes_from_the_identity_document_with_the_watchers_token(imds):
    cloud = AwsCloud()
    conf = section(imds.url)
    spot = next(w for w in cloud.watchers(conf, Clock()) if w.name == "aws-spot")
    spot.poll()
    assert cloud.identity(conf, Clock()) == EXPECTED
    gets = [r for r in imds.requests if r.path == aws.IDENTITY]
    assert len(gets) == 1 and gets[0].headers.get(FLAVOR.token_header)
    assert len([r for r in imds.requests if r.method == "PUT"]) == 1, "the watchers' token"


def test_identity_without_watchers_uses_a_client_of_its_own(imds):
    assert AwsCloud().identity(section(imds.url), Clock()) == EXPECTED


def test_a_missing_document_gives_nothing(imds):
    imds.set(aws.IDENTITY, None)
    assert AwsCloud().identity(section(imds.url), Clock()) == {}


@pytest.mark.parametrize("body", ["<html>captive</html>", "[]", '{"instanceType": "m5.large"}'])
def test_an_unreadable_document_gives_nothing(imds, body):
    imds.set(aws.IDENTITY, body)
    assert AwsCloud().identity(section(imds.url), Clock()) == {}


def test_unusable_values_are_left_out(imds):
    imds.set(aws.IDENTITY, document(availabilityZone="eu-west-1a\nX-Evil: 1", instanceType=7))
    assert AwsCloud().identity(section(imds.url), Clock()) == {"region": "eu-west-1"}


def test_a_failing_service_gives_nothing_and_does_not_raise(imds):
    imds.fail(10, 500)
    assert AwsCloud().identity(section(imds.url), Clock()) == {}


def test_a_hung_service_gives_nothing_within_the_timeout(imds):
    imds.delay(5)
    started = time.monotonic()
    assert AwsCloud().identity(section(imds.url, timeout=0.3), Clock()) == {}
    assert time.monotonic() - started < 2.0
