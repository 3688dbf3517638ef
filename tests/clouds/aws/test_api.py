"""Confirmation through the EC2 API: boto3 against moto's real HTTP server on loopback.

moto models instances (RunInstances, TerminateInstances, StopInstances change the state
for real) and Spot requests, but not Spot interruptions: a request stays ``fulfilled``.
The tests therefore set the Spot request status code through moto's backend, in this
process (the threaded server shares it). Throttling, 5xx and the eventual consistency of
``InvalidInstanceID.NotFound`` come from a small proxy in front of moto that answers the
first N calls of an action with EC2's own XML error. Time is a fake clock: every backoff
wait is recorded and none is slept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Callable, Optional

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.server import ThreadedMotoServer

from agent import mock
from agent.clouds.aws import CLOUD
from agent.clouds.aws import api as aws_api
from agent.clouds.aws import mock as aws_mock
from agent.clouds.aws.config import AwsConfig
from agent.confirmation import MAX_WAIT, Confirmation, Verdict, confirm_with
from agent.notice import SPOT_INTERRUPTION, Notice
from tests.fakes.clock import FakeClock
from tests.fakes.ec2_proxy import FaultProxy

REGION = "us-east-1"
BUDGET = 180.0
ROLE = "preempt-agent-role"
SECRET_TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token-never-logged"  # noqa: S105 - a fake


def refused_port() -> int:
    """A loopback port nothing listens on: a connection there is refused at once."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Dummy keys, no AWS files, and botocore's own IMDS default aimed at a refused port."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{refused_port()}")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)


@pytest.fixture
def admin(moto_url: str) -> Any:
    """A client straight to moto, for setting the scene."""
    return boto3.client("ec2", region_name=REGION, endpoint_url=moto_url)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url) as p:
        yield p


@dataclasses.dataclass
class Spot:
    instance_id: str
    request_id: str

    def set_status(self, code: str) -> None:
        backend = ec2_backends[DEFAULT_ACCOUNT_ID][REGION]
        backend.spot_instance_requests[self.request_id]._status_code = code


@pytest.fixture
def spot(admin: Any) -> Spot:
    answer = admin.request_spot_instances(
        InstanceCount=1,
        LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
    )
    request_id = answer["SpotInstanceRequests"][0]["SpotInstanceRequestId"]
    described = admin.describe_spot_instance_requests(SpotInstanceRequestIds=[request_id])
    return Spot(described["SpotInstanceRequests"][0]["InstanceId"], request_id)


@pytest.fixture
def imds(spot: Spot) -> Iterator[mock.MockMetadataServer]:
    with mock.MockMetadataServer(aws_mock.FLAVOR) as server:
        aws_mock.defaults(server, instance_id=spot.instance_id, region=REGION)
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_config(imds: mock.MockMetadataServer, endpoint: str) -> AwsConfig:
    return AwsConfig(metadata_url=imds.url, endpoint_url=endpoint, timeout=1.0)


def spot_notice(instance_id: str, clock: FakeClock) -> Notice:
    now = clock.now()
    return Notice(
        provider="aws",
        kind=SPOT_INTERRUPTION,
        action="terminate",
        instance_id=instance_id,
        event_id=f"aws:{instance_id}:{SPOT_INTERRUPTION}",
        deadline=now + timedelta(minutes=2),
        raw='{"action": "terminate"}',
        detected_at=now,
    )


def confirm(
    spot: Spot,
    imds: mock.MockMetadataServer,
    endpoint: str,
    clock: FakeClock,
    gone: Callable[[], bool] = lambda: False,
    cancel: Optional[threading.Event] = None,
) -> Optional[Confirmation]:
    notice = spot_notice(spot.instance_id, clock)
    return confirm_with(
        CLOUD,
        notice,
        make_config(imds, endpoint),
        clock,
        clock.monotonic() + BUDGET,
        gone=gone,
        cancel=cancel,
    )


# -- the Spot request status ----------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "marked-for-termination",
        "marked-for-stop",
        "instance-terminated-no-capacity",
        "instance-terminated-by-price",
        "instance-stopped-no-capacity",
        "instance-terminated-by-experiment",
        "marked-for-stop-by-experiment",
        "instance-stopped-by-experiment",
    ],
)
def test_an_interrupting_spot_status_confirms_at_first_look(
    code: str, spot: Spot, imds: mock.MockMetadataServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    spot.set_status(code)
    found = confirm(spot, imds, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert code in found.detail and spot.request_id in found.detail
    assert clock.waits == []
    assert [a for a, _ in proxy.seen()] == ["DescribeSpotInstanceRequests"], (
        "the Spot status is enough; DescribeInstances is not needed"
    )


def test_status_that_changes_during_confirmation_is_seen_after_backoff(
    spot: Spot, imds: mock.MockMetadataServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    clock.on_wait = lambda n: spot.set_status("marked-for-termination") if n == 3 else None
    found = confirm(spot, imds, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert "marked-for-termination" in found.detail and "4 looks" in found.detail
    assert len(clock.waits) == 3
    # Jittered exponential backoff from one second: 1+j, 2+j, 4+j with j < 1.
    for wait, base in zip(clock.waits, (1, 2, 4)):
        assert base <= wait <= base + 1
    assert len(proxy.seen("DescribeInstances")) == 3  # instance running, spot fulfilled


# -- the instance state -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "states"),
    [
        ("terminate_instances", ("shutting-down", "terminated")),
        ("stop_instances", ("stopping", "stopped")),
    ],
)
def test_instance_state_confirms_when_the_spot_status_says_nothing(
    operation: str,
    states: tuple[str, ...],
    admin: Any,
    spot: Spot,
    imds: mock.MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
) -> None:
    getattr(admin, operation)(InstanceIds=[spot.instance_id])  # moto changes the state itself
    found = confirm(spot, imds, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert any(f"instance {state}" in found.detail for state in states), found.detail
    assert "spot request" in found.detail and "fulfilled" in found.detail


def test_on_demand_instance_is_confirmed_by_its_state(
    admin: Any, proxy: FaultProxy, clock: FakeClock
) -> None:
    reservation = admin.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="m5.large"
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    admin.terminate_instances(InstanceIds=[instance_id])
    with mock.MockMetadataServer(aws_mock.FLAVOR) as server:
        aws_mock.defaults(server, instance_id=instance_id, region=REGION, life_cycle="on-demand")
        found = confirm(Spot(instance_id, ""), server, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert "terminated" in found.detail and "no spot request" in found.detail


# -- withdrawn, and no answer -----------------------------------------------------------------


def test_fulfilled_after_the_notice_left_metadata_is_withdrawn(
    spot: Spot, imds: mock.MockMetadataServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    gone = threading.Event()
    clock.on_wait = lambda n: gone.set() if n == 2 else None
    found = confirm(spot, imds, proxy.url, clock, gone=gone.is_set)
    assert found is not None and found.verdict is Verdict.WITHDRAWN
    assert "running" in found.detail and "fulfilled" in found.detail
    assert len(clock.waits) == 2


def test_fulfilled_while_the_notice_stays_is_not_confirmed_within_the_budget(
    spot: Spot, imds: mock.MockMetadataServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    started = clock.monotonic()
    real = time.monotonic()
    found = confirm(spot, imds, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.UNKNOWN
    assert "no answer within 180 s" in found.detail and "fulfilled" in found.detail
    assert clock.monotonic() - started == pytest.approx(BUDGET)
    assert max(clock.waits) <= MAX_WAIT
    assert clock.waits[-1] < MAX_WAIT, "the last wait is clipped to the budget"
    assert len(clock.waits) < 20
    assert time.monotonic() - real < 30, "fake time: the budget is not slept"


def test_cancel_ends_the_confirmation_at_once(
    spot: Spot, imds: mock.MockMetadataServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    cancel = threading.Event()
    clock.on_wait = lambda n: cancel.set()
    found = confirm(spot, imds, proxy.url, clock, cancel=cancel)
    assert found is not None and found.verdict is Verdict.UNKNOWN
    assert found.detail.startswith("cancelled (1 looks)")


# -- errors -----------------------------------------------------------------------------------


def test_not_found_is_eventual_consistency_and_retried(
    admin: Any, spot: Spot, imds: mock.MockMetadataServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    admin.terminate_instances(InstanceIds=[spot.instance_id])
    proxy.inject("DescribeInstances", "InvalidInstanceID.NotFound", 400, count=3)
    found = confirm(spot, imds, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert "terminated" in found.detail
    assert [r for _, r in proxy.seen("DescribeInstances")] == ["InvalidInstanceID.NotFound"] * 3 + [
        "passed"
    ]
    assert len(clock.waits) == 3


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("RequestLimitExceeded", 503),
        ("Throttling", 400),
        ("InternalError", 500),
        ("Unavailable", 503),
        ("SomethingNew", 502),  # any 5xx
    ],
)
def test_throttling_and_server_errors_are_retried(
    code: str,
    status: int,
    spot: Spot,
    imds: mock.MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spot.set_status("marked-for-termination")
    proxy.inject("DescribeSpotInstanceRequests", code, status, count=2)
    with caplog.at_level(logging.INFO):
        found = confirm(spot, imds, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert len(clock.waits) == 2
    failures = [r for r in caplog.records if code in r.getMessage()]
    assert len(failures) == 1, "a recurring failure is logged at a bounded rate"


def test_throttling_that_never_ends_is_bounded_by_the_budget(
    spot: Spot, imds: mock.MockMetadataServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    proxy.inject("DescribeSpotInstanceRequests", "RequestLimitExceeded", 503, count=1000)
    found = confirm(spot, imds, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.UNKNOWN
    assert "RequestLimitExceeded" in found.detail
    assert clock.monotonic() >= 1000.0 + BUDGET


@pytest.mark.parametrize(
    ("code", "status"),
    [("UnauthorizedOperation", 403), ("AuthFailure", 401), ("AccessDenied", 403)],
)
def test_no_permission_is_said_once_and_confirmation_skipped(
    code: str,
    status: int,
    spot: Spot,
    imds: mock.MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.inject("DescribeSpotInstanceRequests", code, status, count=1000)
    with caplog.at_level(logging.INFO):
        found = confirm(spot, imds, proxy.url, clock)
    assert found is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert code in errors[0].getMessage() and "skipping confirmation" in errors[0].getMessage()
    assert len(proxy.seen()) == 1 and clock.waits == []


def test_no_credentials_skips_at_once_and_asks_only_the_configured_metadata(
    monkeypatch: pytest.MonkeyPatch,
    spot: Spot,
    imds: mock.MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    real = time.monotonic()
    with caplog.at_level(logging.INFO):
        found = confirm(spot, imds, proxy.url, clock)
    assert found is None
    assert time.monotonic() - real < 15
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no AWS credentials" in errors[0] and imds.url in errors[0]
    assert proxy.seen() == [], "nothing unsigned reaches the API"
    paths = [r.path for r in imds.requests]
    assert "/latest/meta-data/iam/security-credentials/" in paths, (
        "botocore's instance-profile fetch goes to the configured metadata service"
    )
    assert "NETWORK GUARD" not in capfd.readouterr().err


def test_credentials_come_from_the_configured_metadata_service_and_stay_out_of_logs(
    monkeypatch: pytest.MonkeyPatch,
    spot: Spot,
    imds: mock.MockMetadataServer,
    proxy: FaultProxy,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    expires = clock.now().replace(year=2099).strftime("%Y-%m-%dT%H:%M:%SZ")
    imds.set("/latest/meta-data/iam/security-credentials/", ROLE)
    imds.set(
        f"/latest/meta-data/iam/security-credentials/{ROLE}",
        json.dumps(
            {
                "Code": "Success",
                "Type": "AWS-HMAC",
                "AccessKeyId": "ASIAEXAMPLEEXAMPLE00",
                "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "Token": SECRET_TOKEN,
                "Expiration": expires,
                "LastUpdated": "2026-01-05T17:00:00Z",
            }
        ),
    )
    spot.set_status("marked-for-termination")
    with caplog.at_level(logging.DEBUG):
        found = confirm(spot, imds, proxy.url, clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    role_reads = [r for r in imds.requests if r.path.endswith(ROLE)]
    token_header = aws_mock.FLAVOR.token_header.lower()
    assert role_reads and all(token_header in {h.lower() for h in r.headers} for r in role_reads), (
        "botocore fetched the role with an IMDSv2 token"
    )
    assert SECRET_TOKEN not in caplog.text
    assert "wJalrXUtnFEMI" not in caplog.text


def test_identity_document_gives_the_region(
    spot: Spot, imds: mock.MockMetadataServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    imds.set("/latest/dynamic/instance-identity/document", json.dumps({"instanceId": "i-1"}))
    found = confirm(spot, imds, proxy.url, clock)
    assert found is None, "an identity document without a region cannot be used"
    assert proxy.seen() == []


def test_the_idle_agent_imports_no_cloud_sdk() -> None:
    code = (
        "import sys, agent.loop, agent.cli, agent.clouds.aws, agent.clouds.alibaba\n"
        "import agent.clouds.aws.api, agent.clouds.alibaba.api\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('boto3', 'botocore', 'aliyunsdkcore', 'aliyunsdkecs')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_signature_errors_are_reported_without_the_servers_text() -> None:
    """Signature errors can quote the canonical request, session token included."""
    response = {
        "Error": {
            "Code": "SignatureDoesNotMatch",
            "Message": "The canonical string for this request should have been "
            "x-amz-security-token:FwoGZXIvYXdzEXAMPLE",
        },
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    error = aws_api._classify("DescribeInstances", response)
    assert "SignatureDoesNotMatch" in str(error)
    assert "FwoGZXIvYXdzEXAMPLE" not in str(error)


def test_the_metadata_host_is_kept_off_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's credential fetch honours HTTP_PROXY; the agent's metadata host must not."""
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("no_proxy", "example.internal")
    aws_api._bypass_proxy("http://127.0.0.1:8080")
    assert os.environ["NO_PROXY"] == os.environ["no_proxy"] == "example.internal,127.0.0.1"
    aws_api._bypass_proxy("http://127.0.0.1:8080")
    assert os.environ["NO_PROXY"] == "example.internal,127.0.0.1", "added once"
