"""Leaving ELBv2 target groups: boto3 against moto's server on loopback, through a fault proxy.

moto deregisters a target at once (``unused``); a real load balancer keeps it ``draining``
for the group's deregistration delay. The tests put a target into moto's draining state
through its backend (the threaded server shares this process) and take it out on a chosen
wait of the fake clock, so the whole delay passes without sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.elbv2.models import FakeTargetGroup, elbv2_backends

from agent.clouds.aws import mock as aws_mock
from agent.clouds.aws.actions.elb import ElbAction
from agent.clouds.aws.actions.settings import ElbConfig
from agent.clouds.aws.config import AwsConfig
from agent.hooks.runner import ERROR, OK, SKIPPED
from agent.mock import MockMetadataServer
from tests.actions.conftest import context, notice
from tests.fakes.clock import FakeClock
from tests.fakes.ec2_proxy import FaultProxy

REGION = "us-east-1"


@pytest.fixture
def ec2(moto_url: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)


@pytest.fixture
def elb(moto_url: str) -> Any:
    return boto3.client("elbv2", region_name=REGION, endpoint_url=moto_url)


@pytest.fixture
def instance_id(ec2: Any) -> str:
    answer = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    return str(answer["Instances"][0]["InstanceId"])


@pytest.fixture
def groups(ec2: Any, elb: Any, request: pytest.FixtureRequest) -> list[str]:
    """Two fresh target groups (the test's name in theirs, so tests never share one)."""
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    tag = str(abs(hash(request.node.name)) % 10**8)
    arns = []
    for n in range(2):
        tg = elb.create_target_group(
            Name=f"web{n}-{tag}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance"
        )["TargetGroups"][0]["TargetGroupArn"]
        elb.modify_target_group_attributes(
            TargetGroupArn=tg,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}],
        )
        arns.append(tg)
    return arns


@pytest.fixture
def imds(instance_id: str) -> Iterator[MockMetadataServer]:
    with MockMetadataServer(aws_mock.FLAVOR) as server:
        aws_mock.defaults(server, instance_id=instance_id, region=REGION)
        yield server


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as p:
        yield p


def make(imds: MockMetadataServer, proxy: FaultProxy, groups: Any, **elb: Any) -> ElbAction:
    aws = AwsConfig(metadata_url=imds.url, timeout=1.0)
    targets = tuple(groups) if not isinstance(groups, str) else (groups,)
    return ElbAction(aws, ElbConfig(target_groups=targets, endpoint_url=proxy.url, **elb))


def states(elb: Any, arn: str, instance_id: str) -> list[tuple[int, str]]:
    described = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return sorted(
        (d["Target"]["Port"], d["TargetHealth"]["State"])
        for d in described
        if d["Target"]["Id"] == instance_id
    )


@pytest.fixture
def draining(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a real load balancer does after DeregisterTargets: ``draining`` for a while
    (moto's draining state is the one it gives targets of terminated instances)."""

    def deregister(self: FakeTargetGroup, targets: list[dict[str, Any]]) -> None:
        for target in targets:
            self.terminated_targets[target["Id"]] = self.targets.pop(target["Id"])

    monkeypatch.setattr(FakeTargetGroup, "deregister", deregister)


def finish_draining(arn: str, instance_id: str) -> None:
    group = elbv2_backends[DEFAULT_ACCOUNT_ID][REGION].target_groups[arn]
    group.deregistered_targets[instance_id] = group.terminated_targets.pop(instance_id)


@pytest.mark.usefixtures("draining")
def test_deregisters_waits_for_draining_and_registers_again_on_resume(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    tg = groups[0]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance_id, "Port": 8080}])
    action = make(imds, proxy, [tg])
    spot = notice("aws", instance_id, clock)
    clock.on_wait = lambda n: finish_draining(tg, instance_id) if n == 3 else None
    result = action.drain(context(spot, clock))

    assert result.hook == "action:aws-elb"
    assert result.outcome == OK, result.detail
    assert "deregistered from 1 target group" in result.detail
    assert "drained in" in result.detail
    assert states(elb, tg, instance_id) == []
    assert len(clock.waits) == 3 and all(w <= 5.0 for w in clock.waits)
    actions = [a for a, _ in proxy.seen()]
    assert actions[:2] == ["DescribeTargetHealth", "DeregisterTargets"]
    assert "DescribeTargetGroupAttributes" in actions

    resumed = action.resume(context(spot, clock, phase="resume"))
    assert resumed.outcome == OK, resumed.detail
    assert states(elb, tg, instance_id) == [(8080, "healthy")], (
        "registered again on the port it had, not the group's"
    )


@pytest.mark.usefixtures("draining")
def test_the_deregistration_delay_ends_the_wait_not_the_drain(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tg = groups[0]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance_id}])
    action = make(imds, proxy, [tg])
    started = clock.monotonic()
    with caplog.at_level(logging.WARNING):
        result = action.drain(context(notice("aws", instance_id, clock), clock))
    assert result.outcome == OK, result.detail
    assert "still draining" in result.detail and "the wait ended" in result.detail
    took = clock.monotonic() - started
    assert 30 <= took <= 36, "the group's 30 s delay plus one look"
    assert any("the drain goes on" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("draining")
def test_the_run_end_caps_the_wait(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    tg = groups[0]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance_id}])
    action = make(imds, proxy, [tg])
    started = clock.monotonic()
    result = action.drain(context(notice("aws", instance_id, clock), clock, seconds=12))
    assert result.outcome == OK and "still draining" in result.detail
    assert clock.monotonic() - started == pytest.approx(12, abs=0.01)


def test_throttling_and_5xx_are_retried_within_the_budget(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    tg = groups[0]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance_id}])
    proxy.inject("DeregisterTargets", "Throttling", 400, count=2, message="Rate exceeded")
    proxy.inject("DescribeTargetHealth", "InternalFailure", 503, count=1)
    result = make(imds, proxy, [tg], timeout=10).drain(
        context(notice("aws", instance_id, clock), clock)
    )
    assert result.outcome == OK, result.detail
    assert [c for _, c in proxy.seen("DeregisterTargets")] == ["Throttling", "Throttling", "passed"]
    assert states(elb, tg, instance_id) == []
    assert len(clock.waits) == 3 and all(0.9 <= w <= 5.1 for w in clock.waits)


def test_an_api_that_stays_down_is_an_error_result_at_the_end_of_the_run(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    tg = groups[0]
    elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance_id}])
    proxy.inject("DeregisterTargets", "ServiceUnavailable", 503, count=1000)
    started = clock.monotonic()
    result = make(imds, proxy, [tg]).drain(
        context(notice("aws", instance_id, clock), clock, seconds=60)
    )
    assert result.outcome == ERROR
    assert "ServiceUnavailable" in result.detail and "gave up" in result.detail
    assert clock.monotonic() - started == pytest.approx(60, abs=0.01)


def test_access_denied_is_said_once_and_the_drain_goes_on(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for tg in groups:
        elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance_id}])
    proxy.inject("DeregisterTargets", "AccessDenied", 403, count=10, message="not authorized")
    action = make(imds, proxy, groups)
    with caplog.at_level(logging.WARNING):
        result = action.drain(context(notice("aws", instance_id, clock), clock))
        again = action.drain(context(notice("aws", instance_id, clock), clock))
    assert result.outcome == ERROR and again.outcome == ERROR
    assert (
        "AccessDenied" in result.detail
        and "elasticloadbalancing:DeregisterTargets" in result.detail
    )
    assert [c for _, c in proxy.seen("DeregisterTargets")] == ["AccessDenied"] * 2, (
        "no retry, and no second group tried after a refusal"
    )
    assert clock.waits == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "AccessDenied" in errors[0].getMessage()


def test_auto_finds_only_the_groups_that_hold_the_instance(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    elb.register_targets(TargetGroupArn=groups[1], Targets=[{"Id": instance_id}])
    action = make(imds, proxy, "auto", timeout=5)
    result = action.drain(context(notice("aws", instance_id, clock), clock))
    assert result.outcome == OK and "deregistered from 1 target group" in result.detail
    assert states(elb, groups[1], instance_id) == []
    assert ("DescribeTargetGroups", "passed") in proxy.seen()
    deregistered = proxy.seen("DeregisterTargets")
    assert len(deregistered) == 1
    resumed = action.resume(context(notice("aws", instance_id, clock), clock, phase="resume"))
    assert resumed.outcome == OK
    assert states(elb, groups[1], instance_id) == [(80, "healthy")]
    assert states(elb, groups[0], instance_id) == []


def test_an_instance_in_no_group_is_skipped(
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    result = make(imds, proxy, groups).drain(context(notice("aws", instance_id, clock), clock))
    assert result.outcome == SKIPPED and "not registered" in result.detail


def test_dry_run_says_what_it_would_do_and_calls_nothing(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    elb.register_targets(TargetGroupArn=groups[0], Targets=[{"Id": instance_id}])
    action = make(imds, proxy, [groups[0]])
    result = action.drain(context(notice("aws", instance_id, clock), clock, dry_run=True))
    assert result.outcome == OK
    assert result.detail.startswith("dry run: would deregister " + instance_id)
    assert groups[0] in result.detail
    assert proxy.seen() == [] and imds.requests == []
    assert states(elb, groups[0], instance_id) == [(80, "healthy")]


def test_a_wrong_group_is_an_error_and_the_others_are_left(
    elb: Any,
    instance_id: str,
    groups: list[str],
    imds: MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    elb.register_targets(TargetGroupArn=groups[0], Targets=[{"Id": instance_id}])
    wrong = groups[0].rsplit("/", 1)[0] + "/0000000000000000"
    result = make(imds, proxy, [wrong, groups[0]], timeout=5).drain(
        context(notice("aws", instance_id, clock), clock)
    )
    assert result.outcome == ERROR and "TargetGroupNotFound" in result.detail
    assert "deregistered from 1 target group" in result.detail
    assert states(elb, groups[0], instance_id) == []
