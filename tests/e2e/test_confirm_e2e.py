"""The real agent process: notice, hooks, confirmation through the cloud API, exit code.

AWS: boto3 in the agent talks to moto's HTTP server (through a fault proxy) with
credentials from the mock IMDS's instance profile; moto does not model Spot
interruptions, so the Spot request status is set in its backend, in this process.
Alibaba: the real aliyun SDK in the agent talks to the signature-checking fake ECS API
with the RAM role's STS credentials from the mock metadata service in hardened mode.
Everything is on loopback; the network guard in the agent fails the test otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.server import ThreadedMotoServer

from agent import exitcodes, mock
from agent.clouds.alibaba import mock as alibaba_mock
from agent.clouds.aws import mock as aws_mock
from tests.e2e.harness import Agent, Hooks
from tests.fakes.ec2_proxy import FaultProxy
from tests.fakes.ecs_api import EcsApiServer
from tests.waiting import wait_until

REGION = "us-east-1"
SPOT = "/latest/meta-data/spot/instance-action"
TERMINATION_TIME = "/latest/meta-data/instance/spot/termination-time"
ROLE = "drain-role"
INTERVAL = 0.5
StartAgent = Callable[..., Agent]


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def expires() -> str:
    return mock.rfc3339(datetime.now(timezone.utc) + timedelta(hours=6))


def recording(hooks: Hooks, name: str, calls: Path, resume: bool = False) -> None:
    """A hook that also appends ``name phase`` to one shared file, to see the order."""
    header = "# preempt-agent: resume=yes" if resume else ""
    hooks.add(name, body=f'echo "{name} $1" >> "{calls}"', header=header)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- AWS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class SpotInstance:
    def __init__(self, moto_url: str) -> None:
        admin = boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy
        )
        answer = admin.request_spot_instances(
            InstanceCount=1,
            LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
        )
        self.request_id = answer["SpotInstanceRequests"][0]["SpotInstanceRequestId"]
        self.instance_id = admin.describe_spot_instance_requests(
            SpotInstanceRequestIds=[self.request_id]
        )["SpotInstanceRequests"][0]["InstanceId"]

    def set_status(self, code: str) -> None:
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][REGION]
        backend.spot_instance_requests[self.request_id]._status_code = code


@pytest.fixture
def spot(moto_url: str) -> SpotInstance:
    return SpotInstance(moto_url)


@pytest.fixture
def ec2(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as proxy:
        yield proxy


@pytest.fixture
def imds(aws_imds: mock.MockMetadataServer, spot: SpotInstance) -> mock.MockMetadataServer:
    """The instance's IMDS, with an instance profile for botocore to find."""
    aws_mock.defaults(aws_imds, instance_id=spot.instance_id, region=REGION)
    aws_imds.set("/latest/meta-data/iam/security-credentials/", ROLE)
    aws_imds.set(
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
    return aws_imds


def aws_config(endpoint: str, extra: str = "") -> str:
    return f"""
{extra}
[aws]
metadata_url = "@URL@"
endpoint_url = "{endpoint}"
timeout = 1.0
max_backoff = 1.0
[aws.spot]
interval = {INTERVAL}
[aws.rebalance]
enabled = false
[aws.maintenance]
enabled = false
[aws.asg]
enabled = false
"""


def no_aws_files(tmp_path: Path) -> dict[str, str]:
    """No credentials from ~/.aws: only the instance profile may give them."""
    return {
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
    }


def aws_notice(server: mock.MockMetadataServer, seconds: float) -> float:
    server.set(SPOT, aws_mock.spot_action("terminate", in_seconds(seconds)))
    return time.monotonic()


def test_aws_notice_hooks_confirmation_exit_finished(
    imds: mock.MockMetadataServer,
    spot: SpotInstance,
    ec2: FaultProxy,
    hooks: Hooks,
    start_agent: StartAgent,
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    recording(hooks, "10-drain", calls)
    agent = start_agent("aws", imds.url, aws_config(ec2.url), env=no_aws_files(tmp_path))
    agent.wait_for_log("watching aws")
    spot.set_status("marked-for-termination")
    ec2.inject("DescribeSpotInstanceRequests", "RequestLimitExceeded", 503, count=1)
    appeared = aws_notice(imds, 60)

    assert agent.wait() == exitcodes.FINISHED
    took = time.monotonic() - appeared
    assert lines(calls) == ["10-drain drain"]
    confirmed = agent.wait_for_log("confirmed: spot request")
    assert confirmed["outcome"] == "confirmed" and "marked-for-termination" in confirmed["message"]
    assert [r for _, r in ec2.seen("DescribeSpotInstanceRequests")] == [
        "RequestLimitExceeded",
        "passed",
    ]
    role_reads = [r for r in imds.requests if r.path.endswith(f"security-credentials/{ROLE}")]
    assert role_reads, "credentials came from the configured metadata service"
    assert "e2e-session-token" not in "\n".join(agent.lines)
    assert took < 10, f"notice to exit took {took:.1f} s"


def test_aws_no_confirmation_within_the_budget_exits_not_confirmed(
    imds: mock.MockMetadataServer,
    spot: SpotInstance,
    ec2: FaultProxy,
    hooks: Hooks,
    start_agent: StartAgent,
    tmp_path: Path,
) -> None:
    hooks.add("10-drain")
    extra = "confirm_grace = 1"
    agent = start_agent("aws", imds.url, aws_config(ec2.url, extra), env=no_aws_files(tmp_path))
    agent.wait_for_log("watching aws")
    aws_notice(imds, 4)  # stays, while the Spot request stays fulfilled
    assert agent.wait(timeout=30) == exitcodes.NOT_CONFIRMED
    failed = agent.wait_for_log("not confirmed by the aws API")
    assert failed["outcome"] == "not-confirmed" and "fulfilled" in failed["message"]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    (record,) = state["notices"].values()
    assert record["status"] == "not-confirmed"


def test_aws_withdrawn_notice_runs_resume_hooks_then_a_new_notice_drains_again(
    imds: mock.MockMetadataServer,
    spot: SpotInstance,
    ec2: FaultProxy,
    hooks: Hooks,
    start_agent: StartAgent,
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    recording(hooks, "10-first", calls, resume=True)
    recording(hooks, "20-plain", calls)
    recording(hooks, "30-last", calls, resume=True)
    agent = start_agent("aws", imds.url, aws_config(ec2.url), env=no_aws_files(tmp_path))
    agent.wait_for_log("watching aws")
    aws_notice(imds, 60)
    agent.wait_for_log("confirming spot-interruption")
    wait_until(lambda: ec2.seen("DescribeInstances"), 10, "a first look at the instance")
    imds.set(SPOT, None)  # EC2 did not interrupt after all: the notice goes, status fulfilled
    withdrawn = agent.wait_for_log("withdrawn: the notice left metadata", timeout=20)
    assert withdrawn["outcome"] == "withdrawn"
    agent.wait_for_log("watching again", timeout=10)
    assert lines(calls) == [
        "10-first drain",
        "20-plain drain",
        "30-last drain",
        "30-last resume",
        "10-first resume",
    ]
    assert agent.proc.poll() is None, "it keeps watching"

    spot.set_status("marked-for-termination")  # this time it is real
    aws_notice(imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert lines(calls)[5:] == ["10-first drain", "20-plain drain", "30-last drain"]


# -- Alibaba ------------------------------------------------------------------------------------

INSTANCE = "i-bp13znx0m0me8cquu0001"
STS_ID = "STS.NUe2eKeyId"
STS_SECRET = "e2e-sts-secret"  # noqa: S105 - a fake
STS_TOKEN = "e2e-sts-security-token"  # noqa: S105 - a fake


@pytest.fixture
def ecs_meta() -> Iterator[mock.MockMetadataServer]:
    with mock.MockMetadataServer(alibaba_mock.FLAVOR) as server:
        alibaba_mock.defaults(server, instance_id=INSTANCE)
        server.set("/latest/meta-data/ram/security-credentials/", ROLE)
        server.set(
            f"/latest/meta-data/ram/security-credentials/{ROLE}",
            json.dumps(
                {
                    "AccessKeyId": STS_ID,
                    "AccessKeySecret": STS_SECRET,
                    "SecurityToken": STS_TOKEN,
                    "Expiration": expires(),
                    "LastUpdated": mock.rfc3339(datetime.now(timezone.utc)),
                    "Code": "Success",
                }
            ),
        )
        yield server


@pytest.fixture
def ecs_api() -> Iterator[EcsApiServer]:
    with EcsApiServer() as server:
        server.add_key(STS_ID, STS_SECRET, token=STS_TOKEN)
        yield server


def alibaba_config(endpoint: str, extra: str = "") -> str:
    return f"""
{extra}
[alibaba]
metadata_url = "@URL@"
ecs_endpoint = "{endpoint}"
timeout = 1.0
max_backoff = 1.0
[alibaba.spot]
interval = {INTERVAL}
"""


def release_notice(server: mock.MockMetadataServer, seconds: float) -> None:
    server.set(TERMINATION_TIME, mock.rfc3339(in_seconds(seconds)))


def test_alibaba_notice_hooks_confirmation_exit_finished(
    ecs_meta: mock.MockMetadataServer,
    ecs_api: EcsApiServer,
    hooks: Hooks,
    start_agent: StartAgent,
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    recording(hooks, "10-drain", calls)
    ecs_api.set_instance(INSTANCE, locks=("Recycling",))
    ecs_api.fail(1, "Throttling.User", 400)
    agent = start_agent("alibaba", ecs_meta.url, alibaba_config(ecs_api.url))
    agent.wait_for_log("watching alibaba")
    appeared = time.monotonic()
    release_notice(ecs_meta, 300)

    assert agent.wait() == exitcodes.FINISHED
    took = time.monotonic() - appeared
    assert lines(calls) == ["10-drain drain"]
    confirmed = agent.wait_for_log("confirmed: instance Running, locks ['Recycling']")
    assert confirmed["outcome"] == "confirmed"
    assert ecs_api.rejected == [], "every request was signed correctly"
    answers = [r.answer for r in ecs_api.requests]
    assert answers == ["Throttling.User", "ok"]
    assert all(r.params["SecurityToken"] == STS_TOKEN for r in ecs_api.requests)
    gets = [r for r in ecs_meta.requests if r.method == "GET"]
    assert all(r.headers.get(alibaba_mock.FLAVOR.token_header) for r in gets)
    assert len([r for r in ecs_meta.requests if r.method == "PUT"]) == 1, "one token for all"
    log = "\n".join(agent.lines)
    assert STS_TOKEN not in log and STS_SECRET not in log
    assert took < 10, f"notice to exit took {took:.1f} s"


def test_alibaba_throttled_until_the_budget_ends_exits_not_confirmed(
    ecs_meta: mock.MockMetadataServer,
    ecs_api: EcsApiServer,
    hooks: Hooks,
    start_agent: StartAgent,
) -> None:
    hooks.add("10-drain")
    ecs_api.set_instance(INSTANCE, locks=("Recycling",))
    ecs_api.fail(1000, "Throttling.User", 400)
    config = alibaba_config(ecs_api.url, "confirm_grace = 1")
    agent = start_agent("alibaba", ecs_meta.url, config)
    agent.wait_for_log("watching alibaba")
    release_notice(ecs_meta, 4)
    assert agent.wait(timeout=30) == exitcodes.NOT_CONFIRMED
    failed = agent.wait_for_log("not confirmed by the alibaba API")
    assert "Throttling.User" in failed["message"]
    assert ecs_api.rejected == []


def test_alibaba_withdrawn_release_runs_resume_hooks_and_keeps_watching(
    ecs_meta: mock.MockMetadataServer,
    ecs_api: EcsApiServer,
    hooks: Hooks,
    start_agent: StartAgent,
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    recording(hooks, "10-stop-work", calls, resume=True)
    recording(hooks, "20-flush", calls)
    ecs_api.set_instance(INSTANCE)  # Running, no lock: the release was called off
    agent = start_agent("alibaba", ecs_meta.url, alibaba_config(ecs_api.url))
    agent.wait_for_log("watching alibaba")
    release_notice(ecs_meta, 300)
    agent.wait_for_log("confirming spot-interruption")
    wait_until(lambda: ecs_api.requests, 10, "a first DescribeInstances")
    ecs_meta.set(TERMINATION_TIME, None)
    agent.wait_for_log("withdrawn: the notice left metadata", timeout=20)
    agent.wait_for_log("watching again", timeout=10)
    assert lines(calls) == ["10-stop-work drain", "20-flush drain", "10-stop-work resume"]
    assert hooks.arg("10-stop-work") == "resume"
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["notices"] == {}, "forgotten: a later notice drains again"
    agent.signal()
    assert agent.wait() == exitcodes.FINISHED
