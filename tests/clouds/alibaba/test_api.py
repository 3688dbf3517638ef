"""Confirmation through the ECS API: the real aliyun SDK against a local, signature-checking API.

The fake API (tests/fakes/ecs_api.py) verifies every request's RPC v1 signature, key,
security token, nonce and timestamp, so a passing test means the SDK signed what the
agent gave it. Credentials come from the mock metadata service in hardened mode, as on an
instance with a RAM role. Time is a fake clock: backoff waits are recorded, not slept.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

import pytest

from agent import mock
from agent.clouds.alibaba import CLOUD
from agent.clouds.alibaba import mock as alibaba_mock
from agent.clouds.alibaba.config import AlibabaConfig
from agent.confirmation import Confirmation, Verdict, confirm_with
from agent.notice import SPOT_INTERRUPTION, Notice
from tests.fakes.clock import FakeClock
from tests.fakes.ecs_api import EcsApiServer

INSTANCE = "i-bp13znx0m0me8cquu0001"
REGION = "cn-hangzhou"
ROLE = "EcsDrainRole"
ROLES = "/latest/meta-data/ram/security-credentials/"
STS_ID = "STS.NUgYrLnoC37mZZCNnAbez2qa"
STS_SECRET = "ApAkS5SBb7yxmN2qnC9UNSQs3PhgDvoPnbnctUu7tjQy"  # noqa: S105 - a fake
STS_TOKEN = "CAISiwJ1q6Ft5B2yfSjIr5bSEP9SUEXAMPLETOKENnever-logged"  # noqa: S105 - a fake
SECOND_SECRET = "second-secret"  # noqa: S105 - a fake
SECOND_TOKEN = "second-token"  # noqa: S105 - a fake
BUDGET = 180.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SDK credentials or proxies from the environment."""
    for name in (
        "ALIYUN_ACCESS_KEY_ID",
        "ALIYUN_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "DEBUG",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api() -> Iterator[EcsApiServer]:
    with EcsApiServer() as server:
        server.add_key(STS_ID, STS_SECRET, token=STS_TOKEN)
        yield server


def role_credentials(
    clock: FakeClock,
    key_id: str = STS_ID,
    secret: str = STS_SECRET,
    token: str = STS_TOKEN,
    valid: timedelta = timedelta(hours=6),
) -> str:
    now = clock.now()
    return json.dumps(
        {
            "AccessKeyId": key_id,
            "AccessKeySecret": secret,
            "SecurityToken": token,
            "Expiration": mock.rfc3339(now + valid),
            "LastUpdated": mock.rfc3339(now),
            "Code": "Success",
        }
    )


@pytest.fixture
def meta(clock: FakeClock) -> Iterator[mock.MockMetadataServer]:
    with mock.MockMetadataServer(alibaba_mock.FLAVOR) as server:
        alibaba_mock.defaults(server, instance_id=INSTANCE, region=REGION)
        server.set(ROLES, ROLE)
        server.set(ROLES + ROLE, role_credentials(clock))
        yield server


def make_config(meta: mock.MockMetadataServer, api: EcsApiServer, **alibaba: Any) -> AlibabaConfig:
    settings = {"metadata_url": meta.url, "ecs_endpoint": api.url, "timeout": 1.0, **alibaba}
    return AlibabaConfig(**settings)


def release_notice(clock: FakeClock, seconds: float = 300.0) -> Notice:
    now = clock.now()
    deadline = now + timedelta(seconds=seconds)
    return Notice(
        provider="alibaba",
        kind=SPOT_INTERRUPTION,
        action="terminate",
        instance_id=INSTANCE,
        event_id=f"alibaba:{INSTANCE}:{SPOT_INTERRUPTION}",
        deadline=deadline,
        raw=mock.rfc3339(deadline),
        detected_at=now,
    )


def confirm(
    config: AlibabaConfig,
    clock: FakeClock,
    gone: Callable[[], bool] = lambda: False,
    notice: Optional[Notice] = None,
) -> Optional[Confirmation]:
    return confirm_with(
        CLOUD,
        notice or release_notice(clock),
        config,
        clock,
        clock.monotonic() + BUDGET,
        gone=gone,
        cancel=threading.Event(),
    )


def role_reads(meta: mock.MockMetadataServer) -> int:
    return sum(1 for r in meta.requests if r.path == ROLES + ROLE)


# -- what DescribeInstances shows -------------------------------------------------------------


@pytest.mark.parametrize("reason", ["Recycling", "recycling", "RECYCLING"])
def test_recycling_lock_confirms_at_first_look(
    reason: str, meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.set_instance(INSTANCE, locks=(reason,))
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert reason in found.detail
    assert clock.waits == []
    assert api.rejected == []
    (request,) = api.requests
    assert request.method == "POST"
    assert request.params["Action"] == "DescribeInstances"
    assert request.params["RegionId"] == REGION
    assert json.loads(request.params["InstanceIds"]) == [INSTANCE]
    assert request.params["AccessKeyId"] == STS_ID
    assert request.params["SecurityToken"] == STS_TOKEN


@pytest.mark.parametrize("status", ["Stopping", "Stopped"])
def test_stopping_or_stopped_confirms(
    status: str, meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.set_instance(INSTANCE, status=status, behavior="Stop")
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert f"instance {status}" in found.detail


def test_lock_that_appears_during_confirmation_is_seen_after_backoff(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.set_instance(INSTANCE)
    clock.on_wait = lambda n: api.set_instance(INSTANCE, locks=("Recycling",)) if n == 2 else None
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert len(clock.waits) == 2 and len(api.requests) == 3
    assert api.rejected == []


def test_running_without_lock_after_the_notice_left_is_withdrawn(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.set_instance(INSTANCE)
    gone = threading.Event()
    clock.on_wait = lambda n: gone.set()
    found = confirm(make_config(meta, api), clock, gone=gone.is_set)
    assert found is not None and found.verdict is Verdict.WITHDRAWN
    assert "Running" in found.detail and "none" in found.detail


def test_running_while_the_notice_stays_is_unknown_at_the_end_of_the_budget(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.set_instance(INSTANCE)
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.UNKNOWN
    assert "no answer within 180 s" in found.detail
    assert clock.monotonic() == pytest.approx(1000.0 + BUDGET)


def test_released_instance_drops_out_of_the_result(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.set_instance(INSTANCE)
    clock.on_wait = lambda n: api.remove_instance(INSTANCE)
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert "released" in found.detail
    assert [r.answer for r in api.requests] == ["ok", "ok"]


def test_absent_before_the_release_time_is_not_yet_a_release(
    meta: mock.MockMetadataServer,
    api: EcsApiServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A RAM policy without ecs:DescribeInstances also gives an empty list, not an error.
    notice = release_notice(clock, seconds=30)
    with caplog.at_level(logging.INFO):
        found = confirm(make_config(meta, api), clock, notice=notice)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert "released" in found.detail
    assert notice.deadline is not None and clock.now() >= notice.deadline
    assert len(api.requests) > 1
    hints = [r for r in caplog.records if "RAM policy may hide it" in r.getMessage()]
    assert len(hints) == 1


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttling.User", 400),
        ("Throttling.Api", 400),
        ("Throttling", 400),
        ("ServiceUnavailable", 503),
        ("InternalError", 500),
        (None, 503),  # a gateway's HTML page: the SDK cannot even read a code
    ],
)
def test_throttling_and_server_errors_are_retried(
    code: Optional[str],
    status: int,
    meta: mock.MockMetadataServer,
    api: EcsApiServer,
    clock: FakeClock,
) -> None:
    api.set_instance(INSTANCE, locks=("Recycling",))
    api.fail(2, code, status)
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert len(clock.waits) == 2
    for wait, base in zip(clock.waits, (1, 2)):
        assert base <= wait <= base + 1
    assert [r.answer for r in api.requests][-1] == "ok"
    assert api.rejected == []


def test_throttling_that_never_ends_is_bounded_by_the_budget(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.fail(1000, "Throttling.User", 400)
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.UNKNOWN
    assert "Throttling.User" in found.detail
    assert max(clock.waits) <= 20.0


def test_forbidden_is_said_once_and_confirmation_skipped(
    meta: mock.MockMetadataServer,
    api: EcsApiServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.add_key(STS_ID, STS_SECRET, token=STS_TOKEN, allowed=False)
    with caplog.at_level(logging.INFO):
        found = confirm(make_config(meta, api), clock)
    assert found is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Forbidden.RAM" in errors[0]
    assert len(api.requests) == 1 and clock.waits == []


def test_wrong_secret_is_said_once_without_the_signed_string(
    meta: mock.MockMetadataServer,
    api: EcsApiServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.add_key(STS_ID, "not-the-secret-the-instance-has", token=STS_TOKEN)
    with caplog.at_level(logging.DEBUG):
        found = confirm(make_config(meta, api), clock)
    assert found is None
    assert any("SignatureDoesNotMatch" in r for r in api.rejected)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # The SDK compares the server's string to sign with its own: equal strings mean the
    # secret is wrong, and it says so (proof that the fake canonicalises like the SDK).
    assert len(errors) == 1 and "InvalidAccessKeySecret" in errors[0]
    assert "string to sign" not in caplog.text
    assert STS_TOKEN not in caplog.text and STS_SECRET not in caplog.text


def test_network_errors_are_retried_and_the_signed_url_is_never_logged(
    meta: mock.MockMetadataServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with EcsApiServer() as stopped:
        url = stopped.url
    config = AlibabaConfig(metadata_url=meta.url, ecs_endpoint=url, timeout=1.0)
    with caplog.at_level(logging.DEBUG):
        found = confirm(config, clock)
    assert found is not None and found.verdict is Verdict.UNKNOWN
    assert "SDK.HttpError" in found.detail
    assert len(clock.waits) > 3
    assert STS_TOKEN not in caplog.text and STS_TOKEN not in found.detail
    assert "Signature=" not in caplog.text and "Signature=" not in found.detail


# -- credentials --------------------------------------------------------------------------------


def test_role_credentials_are_read_with_the_hardened_mode_token_and_never_logged(
    meta: mock.MockMetadataServer,
    api: EcsApiServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.set_instance(INSTANCE, locks=("Recycling",))
    with caplog.at_level(logging.DEBUG):
        confirm(make_config(meta, api), clock)
    assert STS_TOKEN not in caplog.text and STS_SECRET not in caplog.text
    reads = [r for r in meta.requests if r.method == "GET"]
    assert [r.path for r in reads if r.path.startswith(ROLES)] == [ROLES, ROLES + ROLE]
    assert all(r.headers.get(alibaba_mock.FLAVOR.token_header) for r in reads)


def test_a_configured_role_name_is_not_listed(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.set_instance(INSTANCE, locks=("Recycling",))
    found = confirm(make_config(meta, api, ram_role=ROLE), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert [r.path for r in meta.requests if r.path.startswith(ROLES)] == [ROLES + ROLE]


def test_role_credentials_are_fetched_again_before_they_expire(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    meta.set(ROLES + ROLE, role_credentials(clock, valid=timedelta(minutes=6)))
    api.set_instance(INSTANCE)
    api.add_key("STS.second", SECOND_SECRET, token=SECOND_TOKEN)

    def world(n: int) -> None:
        if n == 1:
            clock.advance(90)  # now inside the last 5 minutes before expiry
            meta.set(
                ROLES + ROLE, role_credentials(clock, "STS.second", SECOND_SECRET, SECOND_TOKEN)
            )
        if n == 2:
            api.set_instance(INSTANCE, locks=("Recycling",))

    clock.on_wait = world
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert [r.params["AccessKeyId"] for r in api.requests] == [STS_ID, "STS.second", "STS.second"]
    assert role_reads(meta) == 2
    assert api.rejected == []


def test_an_expired_token_answer_fetches_new_credentials(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    api.set_instance(INSTANCE, locks=("Recycling",))
    api.fail(1, "InvalidSecurityToken.Expired", 400)
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert role_reads(meta) == 2


def test_no_role_attached_is_said_once(
    meta: mock.MockMetadataServer,
    api: EcsApiServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    meta.set(ROLES, None)
    with caplog.at_level(logging.INFO):
        found = confirm(make_config(meta, api), clock)
    assert found is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no RAM role attached" in errors[0]
    assert api.requests == []


def test_configured_keys_sign_and_stay_secret(
    meta: mock.MockMetadataServer,
    api: EcsApiServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Configured-Secret-0123456789abcdef"  # noqa: S105 - a fake
    api.add_key("LTAI5tConfiguredKey", secret)
    api.set_instance(INSTANCE, locks=("Recycling",))
    config = make_config(meta, api, access_key_id="LTAI5tConfiguredKey", access_key_secret=secret)
    with caplog.at_level(logging.DEBUG):
        found = confirm(config, clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    (request,) = api.requests
    assert request.params["AccessKeyId"] == "LTAI5tConfiguredKey"
    assert "SecurityToken" not in request.params
    assert role_reads(meta) == 0
    assert secret not in caplog.text and secret not in repr(config)


def test_half_a_key_pair_is_refused(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    found = confirm(make_config(meta, api, access_key_id="LTAI5tOnlyTheId"), clock)
    assert found is None
    assert api.requests == []


def test_region_comes_from_metadata(
    meta: mock.MockMetadataServer, api: EcsApiServer, clock: FakeClock
) -> None:
    meta.set("/latest/meta-data/region-id", "eu-central-1")
    api.set_instance(INSTANCE, region="eu-central-1", locks=("Recycling",))
    found = confirm(make_config(meta, api), clock)
    assert found is not None and found.verdict is Verdict.CONFIRMED
    assert api.requests[0].params["RegionId"] == "eu-central-1"


def test_signature_check_of_the_fake_matches_the_documented_example() -> None:
    """The fake's signer against the worked example in Alibaba's RPC signature docs."""
    from tests.fakes.ecs_api import sign, string_to_sign

    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    expected = (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
    )
    assert string_to_sign("GET", params) == expected
    assert sign("GET", params, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    assert datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
