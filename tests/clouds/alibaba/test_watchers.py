"""The Alibaba watcher: every termination-time shape, and the hardened-mode token flow for real."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pytest

from agent import notice as n
from agent.clock import Clock
from agent.clouds import get
from agent.clouds._shared.ec2_protocol import INSTANCE_ID, PathWatcher
from agent.clouds._shared.token_client import MetadataError
from agent.clouds.alibaba import CLOUD, AlibabaCloud
from agent.clouds.alibaba.config import AlibabaConfig
from agent.clouds.alibaba.mock import FLAVOR as ALIBABA
from agent.clouds.alibaba.mock import defaults as alibaba_defaults
from agent.clouds.alibaba.watchers import (
    REGION_ID,
    TERMINATION_TIME,
    Instance,
    parse_release_time,
    parse_termination_time,
)
from agent.config import Config, ConfigError, WatcherConfig, parse
from agent.mock import MockMetadataServer, rfc3339

INSTANCE = "i-bp13znx0m0me8cquu0001"
NOW = datetime(2015, 1, 5, 17, 57, tzinfo=timezone.utc)
RELEASE = datetime(2015, 1, 5, 18, 2, tzinfo=timezone.utc)
TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path


# -- the payload, without a server ---------------------------------------------------------


def test_documented_body_is_a_terminate_notice() -> None:
    body = "2015-01-05T18:02:00Z"
    notice = parse_termination_time(body, INSTANCE, NOW)
    assert notice == n.Notice(
        provider="alibaba",
        kind=n.SPOT_INTERRUPTION,
        action="terminate",
        instance_id=INSTANCE,
        event_id=f"alibaba:{INSTANCE}:spot-interruption",
        deadline=RELEASE,
        raw=body,
        detected_at=NOW,
    )
    assert notice.terminal
    assert n.Notice.from_dict(notice.to_dict()) == notice


@pytest.mark.parametrize("body", [None, "", " ", "\n", " \t\r\n "])
def test_missing_or_blank_body_is_no_notice(body: Optional[str]) -> None:
    assert parse_termination_time(body, INSTANCE, NOW) is None


def test_stop_behaviour_is_the_action() -> None:
    notice = parse_termination_time("2015-01-05T18:02:00Z", INSTANCE, NOW, action="stop")
    assert notice is not None
    assert notice.action == "stop"


def test_event_id_is_stable_when_the_time_moves() -> None:
    first = parse_termination_time("2015-01-05T18:02:00Z", INSTANCE, NOW)
    second = parse_termination_time("2015-01-05T18:03:30Z\n", INSTANCE, NOW + timedelta(seconds=2))
    assert first is not None
    assert second is not None
    assert first.event_id == second.event_id
    assert second.raw == "2015-01-05T18:03:30Z\n"


@pytest.mark.parametrize(
    "body",
    [
        "2015-01-05T18:02:00Z",
        "2015-01-05T18:02:00z",
        "  2015-01-05T18:02:00Z\n",
        "2015-01-05T18:02:00.000Z",
        "2015-01-05 18:02:00Z",
        "2015-01-05T18:02:00+00:00",
        "2015-01-06T02:02:00+08:00",
        "2015-01-05T10:02:00-08:00",
        "2015-01-05T18:02:00",
    ],
)
def test_time_shapes_all_mean_the_same_instant(body: str) -> None:
    notice = parse_termination_time(body, INSTANCE, NOW)
    assert notice is not None
    assert notice.deadline == RELEASE
    assert notice.deadline.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "body",
    [
        "garbage",
        "true",
        "{}",
        '{"time": "2015-01-05T18:02:00Z"}',
        "2015-01-05",
        "18:02:00",
        "2015-13-45T99:99:99Z",
        "2015-01-05T18:02:00Z trailing",
        "2015-01-05T18:02:00 UTC",
        "1420480920",
        "\x00\xff",
    ],
)
def test_body_that_is_not_a_time_raises(body: str) -> None:
    with pytest.raises(ValueError, match="termination-time is not a time"):
        parse_termination_time(body, INSTANCE, NOW)


def test_far_past_time_is_stale_no_notice_and_warned_once(caplog) -> None:
    now = datetime(2026, 11, 22, tzinfo=timezone.utc)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert parse_termination_time("2016-01-05T18:02:00Z", INSTANCE, now) is None
    assert [r.getMessage() for r in caplog.records if "long past" in r.getMessage()] == [
        "termination-time '2016-01-05T18:02:00Z' is long past; ignoring it"
    ]


def test_recently_past_time_is_still_a_notice() -> None:
    """The release may lag its time a little; the instance is still here, so drain."""
    notice = parse_termination_time(
        "2015-01-05T18:02:00Z", INSTANCE, RELEASE + timedelta(minutes=5)
    )
    assert notice is not None
    assert notice.deadline == RELEASE


def test_far_future_time_is_a_notice() -> None:
    notice = parse_termination_time("2099-01-01T00:00:00Z", INSTANCE, NOW)
    assert notice is not None
    assert notice.deadline == datetime(2099, 1, 1, tzinfo=timezone.utc)


def test_parse_release_time_rejects_long_input_without_echoing_all_of_it() -> None:
    with pytest.raises(ValueError) as info:
        parse_release_time("x" * 10_000)
    assert len(str(info.value)) < 200


# -- configuration and wiring ----------------------------------------------------------------


def test_cloud_is_registered() -> None:
    assert get("alibaba") is CLOUD
    assert CLOUD.name == "alibaba"
    assert CLOUD.section is AlibabaConfig


def test_interruption_behaviour_setting() -> None:
    assert Config().alibaba.interruption_behavior == "terminate"
    config = parse('[alibaba]\ninterruption_behavior = "stop"\n')
    assert config.alibaba.interruption_behavior == "stop"
    with pytest.raises(ConfigError, match=r"alibaba\.interruption_behavior"):
        parse('[alibaba]\ninterruption_behavior = "hibernate"\n')


def test_watchers_follow_the_config() -> None:
    # Building watchers touches no network (the suite guard would fail a connection).
    (watcher,) = CLOUD.watchers(AlibabaConfig(), Clock())
    assert isinstance(watcher, PathWatcher)
    assert watcher.name == "alibaba-spot"
    assert watcher.path == TERMINATION_TIME
    assert watcher.interval == 2.0
    faster = AlibabaConfig(spot=WatcherConfig(interval=0.5))
    assert CLOUD.watchers(faster, Clock())[0].interval == 0.5
    off = AlibabaConfig(spot=WatcherConfig(enabled=False))
    assert CLOUD.watchers(off, Clock()) == []


def test_cloud_keeps_the_watchers_instance(server: MockMetadataServer) -> None:
    cloud = AlibabaCloud()
    assert cloud.instance is None
    (watcher,) = cloud.watchers(make_section(server), Clock())
    watcher.poll()
    assert cloud.instance is not None
    assert cloud.instance.read_region_id() == "cn-shanghai"
    assert count(server, "GET", REGION_ID) == 1


# -- against the mock service, over real HTTP --------------------------------------------------


@pytest.fixture
def server() -> Iterator[MockMetadataServer]:
    with MockMetadataServer(ALIBABA) as srv:
        alibaba_defaults(srv, instance_id=INSTANCE, region="cn-shanghai")
        yield srv


def make_section(srv: MockMetadataServer, **alibaba_settings: Any) -> AlibabaConfig:
    return AlibabaConfig(metadata_url=srv.url, **{"timeout": 2.0, **alibaba_settings})


def watcher_for(srv: MockMetadataServer, **alibaba_settings: Any) -> PathWatcher:
    (watcher,) = CLOUD.watchers(make_section(srv, **alibaba_settings), Clock())
    assert isinstance(watcher, PathWatcher)
    return watcher


def header(request: Any, name: str) -> Optional[str]:
    """A header of a logged request, whatever the case it was sent in."""
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return str(value)
    return None


def count(srv: MockMetadataServer, method: str, path: str) -> int:
    return sum(1 for r in srv.requests if r.method == method and r.path == path)


def soon() -> str:
    return rfc3339(datetime.now(timezone.utc) + timedelta(minutes=5))


def test_no_notice_then_a_notice(server: MockMetadataServer) -> None:
    watcher = watcher_for(server)
    assert watcher.poll() == []
    body = soon()
    server.set(TERMINATION_TIME, body)
    (notice,) = watcher.poll()
    assert notice.provider == "alibaba"
    assert notice.instance_id == INSTANCE
    assert notice.event_id == f"alibaba:{INSTANCE}:spot-interruption"
    assert notice.raw == body
    assert notice.action == "terminate"


def test_empty_body_over_http_is_no_notice(server: MockMetadataServer) -> None:
    server.set(TERMINATION_TIME, "")
    assert watcher_for(server).poll() == []


def test_stop_behaviour_reaches_the_notice(server: MockMetadataServer) -> None:
    server.set(TERMINATION_TIME, soon())
    (notice,) = watcher_for(server, interruption_behavior="stop").poll()
    assert notice.action == "stop"


def test_garbage_body_raises_value_error(server: MockMetadataServer) -> None:
    server.set(TERMINATION_TIME, "<html>oops</html>")
    with pytest.raises(ValueError, match="not a time"):
        watcher_for(server).poll()


def test_token_ttl_header_and_token_on_every_get(server: MockMetadataServer) -> None:
    watcher = watcher_for(server, token_ttl=300)
    for _ in range(5):
        watcher.poll()
    requests = server.requests
    puts = [r for r in requests if r.method == "PUT"]
    assert [r.path for r in puts] == [TOKEN_PATH]
    assert header(puts[0], ALIBABA.ttl_header) == "300"
    assert requests[0] is not None
    assert requests[0].method == "PUT"
    gets = [r for r in requests if r.method == "GET"]
    assert gets
    tokens = {header(r, ALIBABA.token_header) for r in gets}
    assert len(tokens) == 1
    assert None not in tokens


def test_identity_is_read_once_across_many_polls(server: MockMetadataServer) -> None:
    watcher = watcher_for(server)
    for i in range(25):
        if i == 10:
            server.set(TERMINATION_TIME, soon())
        watcher.poll()
    assert count(server, "GET", INSTANCE_ID) == 1
    assert count(server, "GET", REGION_ID) == 1
    assert count(server, "GET", TERMINATION_TIME) == 25
    assert count(server, "PUT", TOKEN_PATH) == 1


def test_region_is_exposed_and_cached(server: MockMetadataServer) -> None:
    instance = Instance(make_section(server), Clock())
    assert instance.read_instance_id() == INSTANCE
    assert instance.read_region_id() == "cn-shanghai"
    assert instance.read_region_id() == "cn-shanghai"
    assert count(server, "GET", REGION_ID) == 1


def test_missing_region_does_not_stop_the_watcher(
    server: MockMetadataServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.set(REGION_ID, None)
    server.set(TERMINATION_TIME, soon())
    config = make_section(server)
    instance = Instance(config, Clock())
    watcher = PathWatcher("alibaba-spot", TERMINATION_TIME, 2.0, parse_termination_time, instance)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert len(watcher.poll()) == 1
    assert instance.read_region_id() is None
    assert count(server, "GET", REGION_ID) == 1
    assert caplog.text.count("region-id is empty or missing") == 1


def test_missing_instance_id_is_transient_and_asked_again(server: MockMetadataServer) -> None:
    server.set(INSTANCE_ID, None)
    watcher = watcher_for(server)
    with pytest.raises(MetadataError, match="instance-id"):
        watcher.poll()
    server.set(INSTANCE_ID, INSTANCE)
    server.set(TERMINATION_TIME, soon())
    (notice,) = watcher.poll()
    assert notice.instance_id == INSTANCE
    assert count(server, "GET", INSTANCE_ID) == 2


def test_expired_token_is_renewed_once(server: MockMetadataServer) -> None:
    watcher = watcher_for(server)
    watcher.poll()
    server.expire_tokens()
    start = len(server.requests)
    server.set(TERMINATION_TIME, soon())
    assert len(watcher.poll()) == 1
    after = server.requests[start:]
    assert [(r.method, r.path) for r in after] == [
        ("GET", TERMINATION_TIME),  # refused with 401
        ("PUT", TOKEN_PATH),
        ("GET", TERMINATION_TIME),
    ]
    assert header(after[0], ALIBABA.token_header) != header(after[2], ALIBABA.token_header)


def test_token_refused_twice_is_an_error(server: MockMetadataServer) -> None:
    watcher = watcher_for(server)
    watcher.poll()
    server.set(TERMINATION_TIME, "Unauthorized", status=401)
    start = len(server.requests)
    with pytest.raises(MetadataError, match="401"):
        watcher.poll()
    after = [(r.method, r.path) for r in server.requests[start:]]
    assert after == [("GET", TERMINATION_TIME), ("PUT", TOKEN_PATH), ("GET", TERMINATION_TIME)]


@pytest.mark.parametrize("status", [403, 401, 404, 405, 500])
def test_refused_token_request_is_transient_never_tokenless(
    server: MockMetadataServer, status: int
) -> None:
    server.token_endpoint_status = status
    watcher = watcher_for(server)
    for _ in range(3):
        with pytest.raises(MetadataError, match=f"token request answered {status}"):
            watcher.poll()
    # Every poll asked for a token again and no GET ever went out without one.
    assert count(server, "PUT", TOKEN_PATH) == 3
    assert all(r.method == "PUT" for r in server.requests)
    server.token_endpoint_status = None
    server.set(TERMINATION_TIME, soon())
    assert len(watcher.poll()) == 1
    gets = [r for r in server.requests if r.method == "GET"]
    assert gets
    assert all(header(r, ALIBABA.token_header) for r in gets)


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_failures_are_transient_with_retry_after(server: MockMetadataServer, status: int) -> None:
    watcher = watcher_for(server)
    watcher.poll()
    server.fail(1, status, {"Retry-After": "3"})
    with pytest.raises(MetadataError) as info:
        watcher.poll()
    assert info.value.retry_after == 3.0
    server.set(TERMINATION_TIME, soon())
    assert len(watcher.poll()) == 1


def test_refused_connection_then_recovery(server: MockMetadataServer) -> None:
    watcher = watcher_for(server)
    server.refuse()
    with pytest.raises(MetadataError, match="ConnectionError"):
        watcher.poll()
    server.accept()
    server.set(TERMINATION_TIME, soon())
    assert len(watcher.poll()) == 1


def test_slow_service_times_out(server: MockMetadataServer) -> None:
    watcher = watcher_for(server, timeout=0.2)
    watcher.poll()
    server.delay(5)
    with pytest.raises(MetadataError, match="Timeout"):
        watcher.poll()
    server.delay(0)
    assert watcher.poll() == []


def test_tokens_are_never_logged(
    server: MockMetadataServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    watcher = watcher_for(server)
    watcher.poll()
    server.expire_tokens()
    server.set(TERMINATION_TIME, soon())
    watcher.poll()
    server.fail(1, 503)
    with pytest.raises(MetadataError) as info:
        watcher.poll()
    tokens = {header(r, ALIBABA.token_header) for r in server.requests} - {None}
    assert len(tokens) == 2
    for token in tokens:
        assert token is not None
        assert token not in caplog.text
        assert token not in str(info.value)
