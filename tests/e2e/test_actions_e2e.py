"""The built-in actions through the real agent process: boto3 in the agent against moto.

The agent gets its credentials from the mock IMDS's instance profile (no AWS_* variables,
no ~/.aws files) and talks to moto's server for ELBv2, and to the Auto Scaling proxy in
front of moto (tests/fakes/autoscaling_proxy.py) for the lifecycle calls moto lacks.
The hooks are Python scripts run with this venv's interpreter: they ask moto themselves
what the load balancer holds when they start, and record when they end. Everything is on
loopback; the network guard in the agent and its hooks fails the test otherwise.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import boto3
import pytest
from moto.server import ThreadedMotoServer

from agent import exitcodes, mock
from agent.clouds.aws import mock as aws_mock
from tests.e2e.harness import Agent, Hooks
from tests.fakes.autoscaling_proxy import AutoScalingProxy

REGION = "us-east-1"
SPOT = "/latest/meta-data/spot/instance-action"
ASG_STATE = "/latest/meta-data/autoscaling/target-lifecycle-state"
ROLE = "drain-role"
INTERVAL = 0.5
PORT = 8080
LIFECYCLE_HOOK = "drain-before-terminate"
DUMMY = "testing"
StartAgent = Callable[..., Agent]


def expires() -> str:
    return mock.rfc3339(datetime.now(timezone.utc) + timedelta(hours=6))


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=DUMMY,
        aws_secret_access_key=DUMMY,
    )


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def instance_profile(imds: mock.MockMetadataServer, instance_id: str) -> None:
    """The instance's identity and an instance profile for botocore in the agent to find."""
    aws_mock.defaults(imds, instance_id=instance_id, region=REGION)
    imds.set("/latest/meta-data/iam/security-credentials/", ROLE)
    imds.set(
        f"/latest/meta-data/iam/security-credentials/{ROLE}",
        json.dumps(
            {
                "Code": "Success",
                "Type": "AWS-HMAC",
                "AccessKeyId": "ASIAEXAMPLEEXAMPLE00",
                "SecretAccessKey": "e2e-secret-access-key",
                "Token": "e2e-session-token",
                "Expiration": expires(),
                "LastUpdated": mock.rfc3339(datetime.now(timezone.utc)),
            }
        ),
    )


def loopback_only(tmp_path: Path, imds: mock.MockMetadataServer) -> dict[str, str]:
    """No credentials from ~/.aws; botocore's IMDS default is the mock too."""
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
    }


def config(tables: str = "", asg: str = "") -> str:
    """Spot and (with ``asg`` keys) Auto Scaling watchers, confirmation off, ``tables``."""
    return f"""
confirm = false
[aws]
metadata_url = "@URL@"
timeout = 1.0
max_backoff = 1.0
[aws.spot]
interval = {INTERVAL}
[aws.rebalance]
enabled = false
[aws.maintenance]
enabled = false
{textwrap.dedent(tables)}
[aws.asg]
enabled = {"true" if asg else "false"}
interval = {INTERVAL}
{textwrap.dedent(asg)}
"""


def python_hook(hooks: Hooks, name: str, body: str) -> Path:
    """A hook run by this venv's Python: ``record(**values)`` appends one JSON line."""
    path = hooks.folder / name
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(f"""\
            import json, sys, time
            STARTED = time.monotonic()

            def record(**values):
                with open({str(hooks.out / name)!r} + ".jsonl", "a") as out:
                    out.write(json.dumps({{"phase": sys.argv[1], **values}}) + "\\n")
            """)
        + textwrap.dedent(body)
    )
    path.chmod(0o755)
    return path


def recorded(hooks: Hooks, name: str) -> list[dict[str, Any]]:
    path = hooks.out / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def state(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "state" / "state.json").read_text())["notices"])


def action_logs(agent: Agent, name: str) -> list[tuple[str, str]]:
    """(phase, outcome) of each result line of ``action:<name>``."""
    return [
        (r.get("phase", ""), r["outcome"])
        for r in agent.records()
        if r.get("hook") == f"action:{name}" and "outcome" in r
    ]


# -- ELBv2 --------------------------------------------------------------------------------------


@pytest.fixture
def target(moto_url: str) -> tuple[str, str]:
    """An instance registered on PORT in a target group: (instance id, group ARN)."""
    ec2 = client("ec2", moto_url)
    elb = client("elbv2", moto_url)
    (instance,) = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"]
    instance_id = str(instance["InstanceId"])
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    arn = elb.create_target_group(
        Name="e2e-web", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(
        TargetGroupArn=arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "5"}],
    )
    elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id, "Port": PORT}])
    return instance_id, arn


def registered(moto_url: str, arn: str) -> list[tuple[str, int, str]]:
    answer = client("elbv2", moto_url).describe_target_health(TargetGroupArn=arn)
    return [
        (d["Target"]["Id"], d["Target"].get("Port"), d["TargetHealth"]["State"])
        for d in answer["TargetHealthDescriptions"]
    ]


def test_elb_deregistered_before_the_hooks_and_registered_again_after_hibernation(
    aws_imds: mock.MockMetadataServer,
    moto_url: str,
    target: tuple[str, str],
    hooks: Hooks,
    start_agent: StartAgent,
    tmp_path: Path,
) -> None:
    instance_id, arn = target
    instance_profile(aws_imds, instance_id)
    assert registered(moto_url, arn) == [(instance_id, PORT, "healthy")]
    python_hook(
        hooks,
        "10-check-lb",
        f"""\
        import boto3
        elb = boto3.client(
            "elbv2", region_name={REGION!r}, endpoint_url={moto_url!r},
            aws_access_key_id="{DUMMY}", aws_secret_access_key="{DUMMY}",
        )
        listed = elb.describe_target_health(TargetGroupArn={arn!r})
        asked = elb.describe_target_health(
            TargetGroupArn={arn!r}, Targets=[{{"Id": {instance_id!r}, "Port": {PORT}}}]
        )
        record(
            listed=[d["Target"]["Id"] for d in listed["TargetHealthDescriptions"]],
            state=[d["TargetHealth"]["State"] for d in asked["TargetHealthDescriptions"]],
        )
        """,
    )
    tables = f"""
    [aws.elb]
    target_groups = ["{arn}"]
    endpoint_url = "{moto_url}"
    """
    env = loopback_only(tmp_path, aws_imds)
    agent = start_agent("aws", aws_imds.url, config(tables=tables), env=env)
    agent.wait_for_log("watching aws")
    aws_imds.set(SPOT, aws_mock.spot_action("hibernate", in_seconds(60)))

    agent.wait_for_log("the instance hibernates", timeout=15)
    (seen,) = recorded(hooks, "10-check-lb")
    assert seen == {"phase": "drain", "listed": [], "state": ["unused"]}, (
        "deregistered before the first hook started"
    )
    event_id = f"aws:{instance_id}:spot-interruption"
    drain = state(tmp_path)[event_id]["hooks"]["drain"]
    assert set(drain) == {"action:aws-elb", "10-check-lb"}
    assert drain["action:aws-elb"]["outcome"] == "ok", drain
    assert drain["10-check-lb"]["outcome"] == "ok", drain
    assert registered(moto_url, arn) == []
    assert agent.proc.poll() is None, "the instance comes back in this boot"

    aws_imds.set(SPOT, None)  # back from hibernation: the notice has left metadata
    agent.wait_for_log("watching again", timeout=10)
    assert registered(moto_url, arn) == [(instance_id, PORT, "healthy")], "on the port it had"
    assert action_logs(agent, "aws-elb") == [("drain", "ok"), ("resume", "ok")]
    assert [s["phase"] for s in recorded(hooks, "10-check-lb")] == ["drain"]
    assert state(tmp_path) == {}, "forgotten once resumed"
    assert "e2e-session-token" not in "\n".join(agent.lines)

    agent.signal()
    assert agent.wait() == exitcodes.FINISHED


# -- Auto Scaling lifecycle ------------------------------------------------------------------------


@pytest.fixture
def group(moto_url: str) -> tuple[str, str]:
    """A one-instance group with a termination lifecycle hook: (group name, instance id)."""
    name = "e2e-workers"
    ec2 = client("ec2", moto_url)
    asg = client("autoscaling", moto_url)
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
        LifecycleHookName=LIFECYCLE_HOOK,
        AutoScalingGroupName=name,
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
        HeartbeatTimeout=300,
    )
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    return name, str(found["AutoScalingGroups"][0]["Instances"][0]["InstanceId"])


@pytest.fixture
def autoscaling(moto_url: str) -> Iterator[AutoScalingProxy]:
    with AutoScalingProxy(moto_url, REGION) as proxy:
        yield proxy


def test_asg_lifecycle_heartbeats_during_the_hooks_and_completes_after_them(
    aws_imds: mock.MockMetadataServer,
    group: tuple[str, str],
    autoscaling: AutoScalingProxy,
    hooks: Hooks,
    start_agent: StartAgent,
    tmp_path: Path,
) -> None:
    name, instance_id = group
    instance_profile(aws_imds, instance_id)
    go = tmp_path / "go"
    python_hook(
        hooks,
        "10-drain",
        f"""\
        import os
        go = {str(go)!r}
        while not os.path.exists(go) and time.monotonic() < STARTED + 10:
            time.sleep(0.01)  # until the test has seen a heartbeat (bounded)
        record(started=STARTED, released=os.path.exists(go), ended=time.monotonic())
        """,
    )
    keys = f"""
    lifecycle_hook = "{LIFECYCLE_HOOK}"
    heartbeat_interval = 0.2
    endpoint_url = "{autoscaling.url}"
    """
    env = loopback_only(tmp_path, aws_imds)
    agent = start_agent("aws", aws_imds.url, config(asg=keys), env=env)
    agent.wait_for_log("watching aws")
    aws_imds.set(ASG_STATE, "Terminated")

    (beat, *_) = autoscaling.wait_for("RecordLifecycleActionHeartbeat", 1, timeout=10)
    assert autoscaling.calls("CompleteLifecycleAction") == [], "not while the hook runs"
    go.touch()

    assert agent.wait() == exitcodes.FINISHED
    (hook,) = recorded(hooks, "10-drain")
    assert hook["released"], "the hook saw the heartbeat go out while it ran"
    (complete,) = autoscaling.calls("CompleteLifecycleAction")
    assert complete.params["LifecycleActionResult"] == "CONTINUE"
    assert complete.params["InstanceId"] == instance_id
    assert complete.params["LifecycleHookName"] == LIFECYCLE_HOOK
    assert complete.params["AutoScalingGroupName"] == name
    assert complete.time > hook["ended"], "completed only after the last hook had finished"
    assert beat.time < hook["ended"]
    assert beat.params["InstanceId"] == instance_id
    assert instance_id in autoscaling.completed
    assert [c.action for c in autoscaling.calls()][-1] == "CompleteLifecycleAction"
    assert ("DescribeAutoScalingInstances", "passed") in autoscaling.seen()

    steps = state(tmp_path)[f"aws:{instance_id}:asg-termination"]["hooks"]["drain"]
    assert set(steps) == {"10-drain", "action:aws-asg-lifecycle"}
    assert steps["action:aws-asg-lifecycle"]["outcome"] == "ok", steps
    assert action_logs(agent, "aws-asg-lifecycle") == [("drain", "ok")]
