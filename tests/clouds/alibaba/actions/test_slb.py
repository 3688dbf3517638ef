"""Leaving Alibaba Cloud load balancers: the real aliyun SDK (ECS credentials code, SLB
package) against a local SLB API that checks every request's signature and token."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from agent.clouds.alibaba import mock as ali_mock
from agent.clouds.alibaba.actions.settings import SlbConfig
from agent.clouds.alibaba.actions.slb import SlbAction
from agent.clouds.alibaba.config import AlibabaConfig
from agent.hooks.runner import ERROR, OK, SKIPPED
from agent.mock import MockMetadataServer, rfc3339
from tests.actions.conftest import context, notice
from tests.fakes.clock import FakeClock
from tests.fakes.slb_api import SlbApiServer

INSTANCE = "i-bp13znx0m0me8cquu0001"
OTHER = "i-bp13znx0m0me8cquu0002"
REGION = "cn-hangzhou"
ROLE = "EcsDrainRole"
ROLES = "/latest/meta-data/ram/security-credentials/"
STS_ID = "STS.NUgYrLnoC37mZZCNnAbez2qa"
STS_SECRET = "ApAkS5SBb7yxmN2qnC9UNSQs3PhgDvoPnbnctUu7tjQy"  # noqa: S105 - a fake
STS_TOKEN = "CAISiwJ1q6Ft5B2yfSjIr5bSEP9SUEXAMPLETOKENnever-logged"  # noqa: S105 - a fake
LBS = ("lb-bp1o94dp5i6earr9g6d1l", "lb-bp1b6c719dfa08exfuca5")


@pytest.fixture
def api() -> Iterator[SlbApiServer]:
    with SlbApiServer() as server:
        server.add_key(STS_ID, STS_SECRET, token=STS_TOKEN)
        for lb in LBS:
            server.add_load_balancer(lb, REGION)
            server.set_backend(lb, OTHER, 100)
        yield server


@pytest.fixture
def meta(clock: FakeClock) -> Iterator[MockMetadataServer]:
    with MockMetadataServer(ali_mock.FLAVOR) as server:
        ali_mock.defaults(server, instance_id=INSTANCE, region=REGION)
        server.set(ROLES, ROLE)
        now = clock.now()
        server.set(
            ROLES + ROLE,
            json.dumps(
                {
                    "AccessKeyId": STS_ID,
                    "AccessKeySecret": STS_SECRET,
                    "SecurityToken": STS_TOKEN,
                    "Expiration": rfc3339(now + timedelta(hours=6)),
                    "LastUpdated": rfc3339(now),
                    "Code": "Success",
                }
            ),
        )
        yield server


def make(meta: MockMetadataServer, api: SlbApiServer, **slb: Any) -> SlbAction:
    alibaba = AlibabaConfig(metadata_url=meta.url, timeout=1.0, api_timeout=5.0)
    settings = {"load_balancers": LBS, "endpoint": api.url, "drain_time": 20.0, **slb}
    return SlbAction(alibaba, SlbConfig(**settings))


def test_weight_zero_then_removed_then_back_with_its_weight(
    api: SlbApiServer, meta: MockMetadataServer, clock: FakeClock
) -> None:
    api.set_backend(LBS[0], INSTANCE, 70)
    api.set_backend(LBS[1], INSTANCE, 100)
    seen_at_wait: list[dict[str, int]] = []
    clock.on_wait = lambda n: seen_at_wait.append(api.backends(LBS[0]))
    action = make(meta, api)
    result = action.drain(context(notice("alibaba", INSTANCE, clock), clock))

    assert result.hook == "action:alibaba-slb"
    assert result.outcome == OK, result.detail
    assert seen_at_wait == [{OTHER: 100, INSTANCE: 0}], "weight 0 during the wait"
    assert clock.waits == [20.0]
    assert api.backends(LBS[0]) == {OTHER: 100} and api.backends(LBS[1]) == {OTHER: 100}
    assert api.rejected == [], "every request signed with the role's key and token"
    assert api.actions() == [
        "DescribeLoadBalancerAttribute",
        "SetBackendServers",
        "DescribeLoadBalancerAttribute",
        "SetBackendServers",
        "RemoveBackendServers",
        "RemoveBackendServers",
    ]
    assert all(r.params.get("SecurityToken") == STS_TOKEN for r in api.requests)

    resumed = action.resume(context(notice("alibaba", INSTANCE, clock), clock, phase="resume"))
    assert resumed.outcome == OK, resumed.detail
    assert api.backends(LBS[0]) == {OTHER: 100, INSTANCE: 70}
    assert api.backends(LBS[1]) == {OTHER: 100, INSTANCE: 100}


def test_the_run_end_cuts_the_wait_and_removal_still_happens(
    api: SlbApiServer, meta: MockMetadataServer, clock: FakeClock
) -> None:
    api.set_backend(LBS[0], INSTANCE, 100)
    result = make(meta, api, drain_time=300.0).drain(
        context(notice("alibaba", INSTANCE, clock), clock, seconds=15)
    )
    assert result.outcome == OK, result.detail
    assert clock.waits == [15.0]
    assert INSTANCE not in api.backends(LBS[0])


def test_throttling_and_5xx_are_retried(
    api: SlbApiServer, meta: MockMetadataServer, clock: FakeClock
) -> None:
    api.set_backend(LBS[0], INSTANCE, 100)
    api.fail(1, "Throttling.User", 400, "Request was denied due to user flow control.")
    api.fail(1, "ServiceUnavailable", 503)
    api.fail(1, None, 503)  # a gateway's bare HTML page
    result = make(meta, api, drain_time=0.0).drain(
        context(notice("alibaba", INSTANCE, clock), clock)
    )
    assert result.outcome == OK, result.detail
    assert [r.answer for r in api.requests][:4] == [
        "Throttling.User",
        "ServiceUnavailable",
        "bare",
        "ok",
    ]
    assert len(clock.waits) == 3
    assert INSTANCE not in api.backends(LBS[0])


def test_access_denied_is_said_once_and_nothing_else_is_tried(
    meta: MockMetadataServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with SlbApiServer() as api:
        api.add_key(STS_ID, STS_SECRET, token=STS_TOKEN, allowed=False)
        for lb in LBS:
            api.add_load_balancer(lb, REGION)
            api.set_backend(lb, INSTANCE, 100)
        action = make(meta, api)
        with caplog.at_level(logging.WARNING):
            result = action.drain(context(notice("alibaba", INSTANCE, clock), clock))
        requests = api.requests
    assert result.outcome == ERROR
    assert "Forbidden.RAM" in result.detail and "slb:SetBackendServers" in result.detail
    assert len(requests) == 1 and clock.waits == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Forbidden.RAM" in errors[0].getMessage()
    assert STS_TOKEN not in caplog.text and STS_SECRET not in caplog.text


def test_an_unknown_load_balancer_is_an_error_and_the_others_are_left(
    api: SlbApiServer, meta: MockMetadataServer, clock: FakeClock
) -> None:
    api.set_backend(LBS[1], INSTANCE, 100)
    result = make(meta, api, load_balancers=("lb-nosuch", LBS[1]), drain_time=1.0).drain(
        context(notice("alibaba", INSTANCE, clock), clock)
    )
    assert result.outcome == ERROR and "InvalidLoadBalancerId.NotFound" in result.detail
    assert INSTANCE not in api.backends(LBS[1])


def test_not_a_backend_anywhere_is_skipped(
    api: SlbApiServer, meta: MockMetadataServer, clock: FakeClock
) -> None:
    result = make(meta, api).drain(context(notice("alibaba", INSTANCE, clock), clock))
    assert result.outcome == SKIPPED and clock.waits == []


def test_dry_run_calls_nothing(
    api: SlbApiServer, meta: MockMetadataServer, clock: FakeClock
) -> None:
    api.set_backend(LBS[0], INSTANCE, 100)
    result = make(meta, api).drain(context(notice("alibaba", INSTANCE, clock), clock, dry_run=True))
    assert result.outcome == OK and result.detail.startswith("dry run: would set the weight")
    assert api.requests == [] and meta.requests == []
