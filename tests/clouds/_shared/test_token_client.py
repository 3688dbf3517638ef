"""MetadataClient against the real-HTTP mock: tokens, failures, timeouts, proxies, secrecy."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
import requests

from agent.clock import Clock
from agent.clouds._shared.token_client import TOKEN_PATH, MetadataClient, MetadataError
from agent.clouds.aws.mock import FLAVOR as AWS
from agent.mock import MockMetadataServer, RecordedRequest

INSTANCE_ID = "/latest/meta-data/instance-id"
SPOT = "/latest/meta-data/spot/instance-action"


class FakeClock(Clock):
    """Monotonic time the test moves by hand; shared with the mock so both agree on expiry."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mock(clock: FakeClock) -> Iterator[MockMetadataServer]:
    with MockMetadataServer(AWS, clock=clock.monotonic) as server:
        server.set(INSTANCE_ID, "i-0123456789abcdef0")
        yield server


def make_client(
    server: MockMetadataServer,
    clock: Clock,
    *,
    ttl: int = 21600,
    timeout: float = 2.0,
    fallback: bool = True,
    url: str | None = None,
) -> MetadataClient:
    return MetadataClient(
        url or server.url,
        ttl_header=AWS.ttl_header,
        token_header=AWS.token_header,
        token_ttl=ttl,
        timeout=timeout,
        clock=clock,
        tokenless_fallback=fallback,
    )


@pytest.fixture
def client(mock: MockMetadataServer, clock: FakeClock) -> Iterator[MetadataClient]:
    c = make_client(mock, clock)
    yield c
    c.close()


def puts(server: MockMetadataServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.method == "PUT"]


def gets(server: MockMetadataServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.method == "GET"]


def sent_token(request: RecordedRequest) -> str | None:
    return request.headers.get(AWS.token_header)


# -- tokens -------------------------------------------------------------------------------------


def test_token_put_carries_the_ttl_header(mock: MockMetadataServer, clock: FakeClock) -> None:
    client = make_client(mock, clock, ttl=321)
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"
    (put,) = puts(mock)
    assert put.path == TOKEN_PATH
    assert put.headers[AWS.ttl_header] == "321"
    assert "X-Forwarded-For" not in put.headers


def test_token_sent_on_every_get_and_cached(
    mock: MockMetadataServer, client: MetadataClient
) -> None:
    for _ in range(10):
        assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"
    assert client.get(SPOT) is None
    assert len(puts(mock)) == 1
    tokens = {sent_token(r) for r in gets(mock)}
    assert len(gets(mock)) == 11
    assert len(tokens) == 1
    assert None not in tokens
    assert "" not in tokens


def test_token_refreshed_before_it_expires(mock: MockMetadataServer, clock: FakeClock) -> None:
    client = make_client(mock, clock, ttl=600)  # refreshed 60 s early: at 540 s
    client.get(INSTANCE_ID)
    first = sent_token(gets(mock)[-1])
    clock.t += 539
    client.get(INSTANCE_ID)
    assert len(puts(mock)) == 1
    assert sent_token(gets(mock)[-1]) == first
    clock.t += 1
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"
    assert len(puts(mock)) == 2
    second = sent_token(gets(mock)[-1])
    assert second != first
    # The refresh came before the service would refuse the token: no GET was repeated.
    assert len(gets(mock)) == 3


def test_short_ttl_is_refreshed_a_tenth_early(mock: MockMetadataServer, clock: FakeClock) -> None:
    client = make_client(mock, clock, ttl=100)
    client.get(INSTANCE_ID)
    clock.t += 89.9
    client.get(INSTANCE_ID)
    assert len(puts(mock)) == 1
    clock.t += 0.1
    client.get(INSTANCE_ID)
    assert len(puts(mock)) == 2


def test_401_drops_the_token_and_retries_once(
    mock: MockMetadataServer, client: MetadataClient
) -> None:
    client.get(INSTANCE_ID)
    mock.expire_tokens()
    mock.clear_requests()
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"
    log = mock.requests
    assert [(r.method, r.path) for r in log] == [
        ("GET", INSTANCE_ID),
        ("PUT", TOKEN_PATH),
        ("GET", INSTANCE_ID),
    ]
    assert sent_token(log[0]) != sent_token(log[2])


def test_401_twice_is_a_metadata_error(mock: MockMetadataServer, client: MetadataClient) -> None:
    mock.set(SPOT, "Unauthorized", status=401)
    with pytest.raises(MetadataError, match=f"GET {SPOT} answered 401"):
        client.get(SPOT)
    assert [r.method for r in mock.requests] == ["PUT", "GET", "PUT", "GET"]


@pytest.mark.parametrize("status", [403, 404, 405])
def test_no_token_endpoint_means_tokenless_with_one_warning(
    mock: MockMetadataServer,
    client: MetadataClient,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    mock.token_endpoint_status = status
    mock.token_required = False
    with caplog.at_level(logging.WARNING, logger="agent.clouds._shared.token_client"):
        for _ in range(5):
            assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"
    warnings = [r for r in caplog.records if r.name == "agent.clouds._shared.token_client"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert f"answered {status}; continuing without a session token" in warnings[0].getMessage()
    assert len(puts(mock)) == 1
    assert all(sent_token(r) is None for r in gets(mock))


@pytest.mark.parametrize("status", [403, 404, 405])
def test_no_token_endpoint_is_an_error_without_fallback(
    mock: MockMetadataServer, clock: FakeClock, status: int
) -> None:
    mock.token_endpoint_status = status
    mock.token_required = False
    client = make_client(mock, clock, fallback=False)
    with pytest.raises(MetadataError, match=f"token request answered {status}"):
        client.get(INSTANCE_ID)
    assert gets(mock) == []


def test_token_endpoint_failure_is_not_taken_for_imdsv1(
    mock: MockMetadataServer, client: MetadataClient
) -> None:
    mock.fail(1, 503, {"Retry-After": "4"})
    with pytest.raises(MetadataError, match="token request answered 503") as info:
        client.get(INSTANCE_ID)
    assert info.value.retry_after == 4.0
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"
    assert sent_token(gets(mock)[-1]) is not None


# -- answers ------------------------------------------------------------------------------------


def test_404_is_none_and_200_is_the_body(mock: MockMetadataServer, client: MetadataClient) -> None:
    assert client.get("/latest/meta-data/nothing") is None
    mock.set(SPOT, '{"action": "stop"}\n')
    assert client.get(SPOT) == '{"action": "stop"}\n'
    mock.set(SPOT, "")
    assert client.get(SPOT) == ""


def test_trailing_slash_in_the_base_url(mock: MockMetadataServer, clock: FakeClock) -> None:
    client = make_client(mock, clock, url=mock.url + "/")
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"
    assert gets(mock)[0].path == INSTANCE_ID


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (500, {}, None),
        (502, {}, None),
        (503, {"Retry-After": "2"}, 2.0),
        (429, {"Retry-After": "1.5"}, 1.5),
        (429, {"Retry-After": "-3"}, 0.0),
        (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date already past
    ],
)
def test_server_errors_and_throttling(
    mock: MockMetadataServer,
    client: MetadataClient,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    client.get(INSTANCE_ID)  # the token is cached, so the failure hits the GET
    mock.fail(1, status, headers)
    with pytest.raises(MetadataError, match=f"GET {SPOT} answered {status}") as info:
        client.get(SPOT)
    assert info.value.retry_after == retry_after
    assert len(gets(mock)) == 2, "a 5xx or 429 is not retried at once"
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"


def test_connection_refused(mock: MockMetadataServer, client: MetadataClient) -> None:
    client.get(INSTANCE_ID)
    mock.refuse()
    with pytest.raises(MetadataError, match=f"GET {INSTANCE_ID}: ConnectionError"):
        client.get(INSTANCE_ID)
    mock.accept()
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"


def test_nothing_listening_at_all(clock: FakeClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = MetadataClient(
        f"http://127.0.0.1:{port}",
        ttl_header=AWS.ttl_header,
        token_header=AWS.token_header,
        token_ttl=60,
        timeout=1.0,
        clock=clock,
        tokenless_fallback=True,
    )
    with pytest.raises(MetadataError, match=f"PUT {TOKEN_PATH}: ConnectionError") as info:
        client.get(INSTANCE_ID)
    assert info.value.retry_after is None


def test_slow_answer_is_a_timeout(mock: MockMetadataServer, clock: FakeClock) -> None:
    client = make_client(mock, clock, timeout=0.2)
    client.get(INSTANCE_ID)
    mock.delay(5)
    with pytest.raises(MetadataError, match=f"GET {INSTANCE_ID}: .*Timeout"):
        client.get(INSTANCE_ID)
    mock.delay(0)
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"


def test_slow_token_endpoint_is_a_timeout(mock: MockMetadataServer, clock: FakeClock) -> None:
    client = make_client(mock, clock, timeout=0.2)
    mock.delay(5)
    with pytest.raises(MetadataError, match=f"PUT {TOKEN_PATH}: .*Timeout"):
        client.get(INSTANCE_ID)


# -- environment --------------------------------------------------------------------------------


def test_proxies_from_the_environment_are_ignored(
    mock: MockMetadataServer, client: MetadataClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    # The proxy setting is live: an ordinary request would go to the dead proxy.
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get(mock.url + INSTANCE_ID, timeout=2)
    mock.clear_requests()
    assert client.get(INSTANCE_ID) == "i-0123456789abcdef0"
    assert [r.path for r in mock.requests] == [TOKEN_PATH, INSTANCE_ID]


def test_token_never_logged(
    mock: MockMetadataServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(mock, clock, timeout=0.3)
    client.get(INSTANCE_ID)
    mock.expire_tokens()
    client.get(INSTANCE_ID)  # 401, new token
    mock.set(SPOT, "no", status=401)
    with pytest.raises(MetadataError) as refused:
        client.get(SPOT)
    mock.fail(1, 503)
    with pytest.raises(MetadataError) as failed:
        client.get(INSTANCE_ID)
    mock.delay(5)
    with pytest.raises(MetadataError) as slow:
        client.get(INSTANCE_ID)
    tokens = {sent_token(r) for r in mock.requests} - {None}
    assert len(tokens) >= 3
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "debug logs were captured"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__)
        for token in tokens:
            assert token not in text, f"token leaked via {record.name}"  # type: ignore[operator]
    for error in (refused.value, failed.value, slow.value):
        for token in tokens:
            assert token not in str(error)  # type: ignore[operator]
