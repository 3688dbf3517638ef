"""Completing the Auto Scaling lifecycle action: boto3 against a lifecycle endpoint in front
of moto (tests/fakes/autoscaling_proxy.py), which answers CompleteLifecycleAction and
RecordLifecycleActionHeartbeat the way Auto Scaling checks them and records every call."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from agent.clock import Clock
from agent.clouds.aws import mock as aws_mock
from agent.clouds.aws.actions.lifecycle import LifecycleAction
from agent.clouds.aws.actions.settings import AsgConfig
from agent.clouds.aws.config import AwsConfig
from agent.hooks.runner import ERROR, OK, SKIPPED
from agent.mock import MockMetadataServer
from agent.notice import ASG_TERMINATION, SPOT_INTERRUPTION
from tests.actions.conftest import context, notice
from tests.fakes.autoscaling_proxy import AutoScalingProxy
from tests.fakes.clock import FakeClock

REGION = "us-east-1"
HOOK = "drain-before-terminate"


@pytest.fixture
def group(moto_url: str, request: pytest.FixtureRequest) -> tuple[str, str]:
    """A one-instance group with a termination lifecycle hook: (group name, instance id)."""
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    asg = boto3.client("autoscaling", region_name=REGION, endpoint_url=moto_url)
    name = f"web-{abs(hash(request.node.name)) % 10**8}"
    template = ec2.create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
    )["LaunchTemplate"]["LaunchTemplateId"]
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": template},
        MinSize=1,
        MaxSize=1,
        AvailabilityZones=[f"{REGION}a"],
    )
    asg.put_lifecycle_hook(
        LifecycleHookName=HOOK,
        AutoScalingGroupName=name,
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
        HeartbeatTimeout=300,
    )
    instances = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return name, str(instances["AutoScalingGroups"][0]["Instances"][0]["InstanceId"])


@pytest.fixture
def proxy(moto_url: str) -> Iterator[AutoScalingProxy]:
    with AutoScalingProxy(moto_url, REGION) as p:
        yield p


@pytest.fixture
def imds(group: tuple[str, str]) -> Iterator[MockMetadataServer]:
    with MockMetadataServer(aws_mock.FLAVOR) as server:
        aws_mock.defaults(server, instance_id=group[1], region=REGION)
        yield server


def make(imds: MockMetadataServer, proxy: AutoScalingProxy, **asg: Any) -> LifecycleAction:
    aws = AwsConfig(metadata_url=imds.url, timeout=1.0, api_timeout=5.0)
    settings = {"lifecycle_hook": HOOK, "endpoint_url": proxy.url, **asg}
    return LifecycleAction(aws, AsgConfig(**settings))


@pytest.mark.parametrize("kind", [ASG_TERMINATION, SPOT_INTERRUPTION])
def test_completes_the_lifecycle_action_with_continue(
    kind: str,
    group: tuple[str, str],
    imds: MockMetadataServer,
    proxy: AutoScalingProxy,
    clock: FakeClock,
) -> None:
    name, instance_id = group
    action = make(imds, proxy)
    result = action.drain(context(notice("aws", instance_id, clock, kind), clock))
    assert result.hook == "action:aws-asg-lifecycle"
    assert result.outcome == OK, result.detail
    assert f"completed {HOOK} in {name} with CONTINUE" in result.detail
    [call] = proxy.calls("CompleteLifecycleAction")
    assert call.params["AutoScalingGroupName"] == name
    assert call.params["LifecycleHookName"] == HOOK
    assert call.params["LifecycleActionResult"] == "CONTINUE"
    assert call.params["InstanceId"] == instance_id
    assert "LifecycleActionToken" not in call.params
    assert [a for a, _ in proxy.seen()] == [
        "DescribeAutoScalingInstances",
        "CompleteLifecycleAction",
    ]


def test_heartbeats_while_the_drain_lasts_then_stop(
    group: tuple[str, str], imds: MockMetadataServer, proxy: AutoScalingProxy
) -> None:
    name, instance_id = group
    clock = Clock()
    action = make(imds, proxy, heartbeat_interval=0.1)
    ctx = context(notice("aws", instance_id, clock, ASG_TERMINATION), clock)
    action.begin(ctx)
    try:
        beats = proxy.wait_for("RecordLifecycleActionHeartbeat", 3)
        result = action.drain(ctx)
    finally:
        action.end()
    assert result.outcome == OK and "heartbeat(s) sent" in result.detail
    assert all(
        b.params["AutoScalingGroupName"] == name
        and b.params["LifecycleHookName"] == HOOK
        and b.params["InstanceId"] == instance_id
        for b in beats
    )
    assert not [t for t in threading.enumerate() if t.name == "asg-heartbeat"], "stopped"
    assert len(proxy.seen("DescribeAutoScalingInstances")) == 1, "the group looked up once"


def test_throttling_and_5xx_are_retried(
    group: tuple[str, str], imds: MockMetadataServer, proxy: AutoScalingProxy, clock: FakeClock
) -> None:
    proxy.inject("DescribeAutoScalingInstances", "Throttling", 400, count=1)
    proxy.inject("CompleteLifecycleAction", "InternalFailure", 500, count=2)
    result = make(imds, proxy).drain(
        context(notice("aws", group[1], clock, ASG_TERMINATION), clock)
    )
    assert result.outcome == OK, result.detail
    assert [c for _, c in proxy.seen("CompleteLifecycleAction")] == [
        "InternalFailure",
        "InternalFailure",
        "passed",
    ]
    assert len(proxy.calls("CompleteLifecycleAction")) == 1
    assert len(clock.waits) == 3


def test_access_denied_is_said_once(
    group: tuple[str, str],
    imds: MockMetadataServer,
    proxy: AutoScalingProxy,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.inject("CompleteLifecycleAction", "AccessDenied", 403, count=5, message="no")
    action = make(imds, proxy)
    with caplog.at_level(logging.WARNING):
        result = action.drain(context(notice("aws", group[1], clock, ASG_TERMINATION), clock))
    assert result.outcome == ERROR
    assert "autoscaling:DescribeAutoScalingInstances" in result.detail
    assert len(proxy.seen("CompleteLifecycleAction")) == 1 and clock.waits == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "AccessDenied" in errors[0].getMessage()


def test_a_wrong_hook_name_is_an_error_result(
    group: tuple[str, str], imds: MockMetadataServer, proxy: AutoScalingProxy, clock: FakeClock
) -> None:
    result = make(imds, proxy, lifecycle_hook="no-such-hook").drain(
        context(notice("aws", group[1], clock, ASG_TERMINATION), clock)
    )
    assert result.outcome == ERROR and "ValidationError" in result.detail
    assert clock.waits == []


def test_an_instance_in_no_group_is_skipped(
    moto_url: str, proxy: AutoScalingProxy, clock: FakeClock
) -> None:
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)
    loner = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]
    with MockMetadataServer(aws_mock.FLAVOR) as server:
        aws_mock.defaults(server, instance_id=loner["InstanceId"], region=REGION)
        action = make(server, proxy)
        result = action.drain(context(notice("aws", loner["InstanceId"], clock), clock))
    assert result.outcome == SKIPPED and "no Auto Scaling group" in result.detail
    assert proxy.calls() == []


def test_dry_run_calls_nothing(
    group: tuple[str, str], imds: MockMetadataServer, proxy: AutoScalingProxy, clock: FakeClock
) -> None:
    action = make(imds, proxy)
    ctx = context(notice("aws", group[1], clock, ASG_TERMINATION), clock, dry_run=True)
    action.begin(ctx)
    result = action.drain(ctx)
    action.end()
    assert result.outcome == OK and result.detail.startswith("dry run: would find")
    assert proxy.seen() == [] and imds.requests == []
