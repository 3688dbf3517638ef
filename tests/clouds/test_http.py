"""The bounded metadata request against a hostile server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from agent.clouds._shared.http import MAX_BODY, HttpClient, RequestError, parse_retry_after
from tests.fakes.hostile_metadata import (
    HostileMetadata,
    Reply,
    gzip_bomb,
    huge,
    redirect,
    retry_after,
    trickled,
)

BOUND = 0.5
SLACK = 0.4  # scheduling noise on a busy two-core machine


@pytest.fixture
def server() -> Iterator[HostileMetadata]:
    with HostileMetadata() as fake:
        yield fake


@pytest.fixture
def other() -> Iterator[HostileMetadata]:
    """A second host: where a redirect would lead."""
    with HostileMetadata("127.0.0.2") as fake:
        yield fake


@pytest.fixture
def client(server: HostileMetadata) -> Iterator[HttpClient]:
    made = HttpClient(server.url, timeout=BOUND, retry_after_cap=30)
    yield made
    made.close()


def failure(client: HttpClient, path: str, method: str = "GET", **kw: object) -> RequestError:
    with pytest.raises(RequestError) as caught:
        client.request(method, path, **kw)  # type: ignore[arg-type]
    return caught.value


def timed(fn: object) -> float:
    start = time.monotonic()
    fn()  # type: ignore[operator]
    return time.monotonic() - start


def test_answers_any_status_with_its_whole_body(server, client):
    server.set("/a", Reply(200, "hello"))
    answer = client.request("GET", "/a")
    assert (answer.status, answer.text) == (200, "hello")
    missing = client.request("GET", "/nothing")
    assert missing.status == 404 and missing.retry_after is None


def test_one_connection_is_kept_alive_across_requests(server, client):
    server.set("/a", Reply(200, "x"))
    for _ in range(5):
        client.request("GET", "/a")
    assert len({r.peer for r in server.requests}) == 1


def test_a_connection_the_server_dropped_while_idle_is_reopened_once(server, client):
    server.set("/a", Reply(200, "x", close=True))
    assert client.request("GET", "/a").text == "x"
    assert client.request("GET", "/a").text == "x"
    assert len({r.peer for r in server.requests}) == 2


def test_a_body_trickled_a_byte_at_a_time_fails_at_the_deadline(server, client):
    server.set("/slow", trickled(b"x" * 100, every=0.05))
    took = timed(lambda: failure(client, "/slow"))
    assert BOUND - 0.05 <= took <= BOUND + SLACK
    assert failure(client, "/slow").kind == "timeout"


def test_trickled_headers_fail_at_the_deadline_too(server, client):
    raw = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
    server.set("/slow-head", Reply(raw=raw, trickle=0.02))
    error = failure(client, "/slow-head")
    assert error.kind == "timeout" and "0.5 s" in str(error)


def test_a_server_that_never_answers_fails_at_the_deadline(server, client):
    server.set("/hang", Reply(hang=True))
    took = timed(lambda: failure(client, "/hang"))
    assert BOUND - 0.05 <= took <= BOUND + SLACK


def test_a_body_shorter_than_announced_fails_at_the_deadline(server, client):
    server.set("/short", Reply(200, "12345", length=10))
    assert failure(client, "/short").kind == "timeout"


def test_a_per_request_timeout_overrides_the_clients(server, client):
    server.set("/hang", Reply(hang=True))
    took = timed(lambda: failure(client, "/hang", timeout=0.1))
    assert took < BOUND


def test_the_client_works_again_after_a_timeout(server, client):
    server.set("/hang", Reply(hang=True))
    server.set("/a", Reply(200, "fine"))
    failure(client, "/hang")
    assert client.request("GET", "/a").text == "fine"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(server, other, client, status):
    server.set("/spot", redirect(f"{other.url}/steal?token=secret#frag", status), "PUT")
    server.set("/spot", redirect(f"{other.url}/steal?token=secret#frag", status))
    for method in ("GET", "PUT"):
        error = failure(client, "/spot", method, headers={"X-Token": "t0k"})
        assert error.kind == "redirect"
        assert f"redirected to {other.url}/steal, not followed" in str(error)
        assert "secret" not in str(error) and "frag" not in str(error)
    assert other.requests == []


def test_a_redirect_location_with_control_characters_is_escaped(server, client):
    server.set("/r", redirect("http://evil\x1b[31m.example/\x00x"))
    message = str(failure(client, "/r"))
    assert "\x1b" not in message and "\x00" not in message and "not followed" in message


def test_no_accept_encoding_is_sent_and_compressed_answers_are_refused(server, client):
    server.set("/bomb", gzip_bomb(16 << 20))
    error = failure(client, "/bomb")
    assert error.kind == "encoding" and "gzip" in str(error)
    assert not any("Accept-Encoding" in r.headers for r in server.requests)


def test_an_undeclared_compressed_body_is_only_bytes_and_capped(server, client):
    server.set("/bomb", gzip_bomb(100 << 20, declared=False))
    error = failure(client, "/bomb")
    assert error.kind == "too-large"


def test_identity_encoding_is_accepted(server, client):
    server.set("/a", Reply(200, "ok", [("Content-Encoding", "identity")]))
    assert client.request("GET", "/a").text == "ok"


@pytest.mark.parametrize(
    "reply",
    [
        huge(50 << 20),
        huge(50 << 20, declare=False),
        Reply(200, stream=huge(50 << 20).stream, chunked=True),
    ],
    ids=["declared", "until-close", "chunked"],
)
def test_a_huge_body_fails_naming_the_cap_without_being_read(server, client, reply):
    server.set("/huge", reply)
    error = failure(client, "/huge")
    assert error.kind == "too-large" and f"{MAX_BODY}-byte cap" in str(error)


def test_a_body_at_the_cap_passes_and_one_byte_more_fails(server):
    small = HttpClient(server.url, timeout=BOUND, max_body=100)
    server.set("/fits", Reply(200, b"a" * 100))
    server.set("/over", Reply(200, b"a" * 101))
    server.set("/over-chunked", Reply(200, b"a" * 101, chunked=True))
    assert len(small.request("GET", "/fits").body) == 100
    assert "100-byte cap" in str(failure(small, "/over"))
    assert failure(small, "/over-chunked").kind == "too-large"
    small.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("  2.5 ", 2.5),
        ("99999", 30.0),
        ("inf", 30.0),
        ("-inf", 0.0),
        ("nan", 30.0),
        ("1e400", 30.0),
        ("-5", 0.0),
        ("soon", None),
        ("5\x00", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_finite_and_clamped(value, expected):
    assert parse_retry_after(value, 30.0) == expected


def test_retry_after_as_an_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 12, usegmt=True), 30.0, now) == pytest.approx(12)
    assert parse_retry_after(formatdate(now + 86400, usegmt=True), 30.0, now) == 30.0
    assert parse_retry_after(formatdate(now - 60, usegmt=True), 30.0, now) == 0.0


@pytest.mark.parametrize("value", ["99999", "inf", "nan", "1e999"])
def test_retry_after_from_the_server_is_clamped_to_the_clients_cap(server, client, value):
    server.set("/busy", retry_after(value))
    answer = client.request("GET", "/busy")
    assert answer.status == 429 and answer.retry_after == 30.0


def test_control_characters_in_answer_headers_do_not_break_the_client(server, client):
    server.set("/odd", Reply(429, "x", [("Retry-After", "7\x00"), ("X-Note", "a\x1bb")]))
    answer = client.request("GET", "/odd")
    assert answer.status == 429 and answer.retry_after is None


def test_a_header_value_with_a_line_break_or_nul_is_never_sent(server, client):
    for bad in ("tok\r\nX-Forged: 1", "tok\n x", "tok\x00"):
        error = failure(client, "/a", headers={"X-Token": bad})
        assert error.kind == "protocol" and "tok" not in str(error)
    assert server.requests == []


def test_proxy_settings_are_ignored(server, other, monkeypatch):
    monkeypatch.setenv("http_proxy", other.url)
    monkeypatch.setenv("HTTP_PROXY", other.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    made = HttpClient(server.url, timeout=BOUND)
    server.set("/a", Reply(200, "direct"))
    assert made.request("GET", "/a").text == "direct"
    assert other.requests == []
    made.close()


def test_a_refused_connection_is_a_connect_failure():
    with HostileMetadata() as gone:
        url = gone.url
    error = failure(HttpClient(url, timeout=BOUND), "/a")
    assert error.kind == "connect"


def test_only_plain_http_urls_are_accepted():
    for bad in ("https://127.0.0.1", "ftp://x", "127.0.0.1:80", "http://"):
        with pytest.raises(ValueError):
            HttpClient(bad, timeout=1)
    with pytest.raises(ValueError):
        HttpClient("http://127.0.0.1", timeout=float("inf"))


def test_a_base_path_prefixes_every_request(server):
    made = HttpClient(server.url + "/prefix/", timeout=BOUND)
    server.set("/prefix/a", Reply(200, "p"))
    assert made.request("GET", "/a").text == "p"
    made.close()


def test_the_client_is_safe_to_share_between_threads(server):
    client = HttpClient(server.url, timeout=10)
    for i in range(8):
        server.set(f"/p{i}", Reply(200, json.dumps({"n": i})))
    errors: list[str] = []

    def worker(i: int) -> None:
        for _ in range(25):
            try:
                body = client.request("GET", f"/p{i}").text
            except RequestError as exc:
                errors.append(str(exc))
                continue
            if json.loads(body)["n"] != i:
                errors.append(body)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    client.close()
    assert errors == []


def test_a_poll_costs_well_under_half_a_millisecond_of_cpu(server, client):
    for _ in range(20):
        client.request("GET", "/nothing")
    count = 300
    start = time.thread_time()
    for _ in range(count):
        client.request("GET", "/nothing")
    per_poll = (time.thread_time() - start) / count
    assert per_poll < 0.0005, f"{per_poll * 1e6:.0f} µs of CPU per poll"


def test_a_request_body_is_sent_with_its_length(server, client):
    server.set("/approve", Reply(200, "ok"), "POST")
    assert client.request("POST", "/approve", body=b'{"a": 1}').text == "ok"
    seen = server.seen("/approve", "POST")[0]
    assert seen.body == b'{"a": 1}' and seen.headers["Content-Length"] == "8"
    server.set("/token", Reply(200, "t"), "PUT")
    client.request("PUT", "/token")
    assert server.seen("/token", "PUT")[0].headers["Content-Length"] == "0"


def test_a_slow_answer_on_one_thread_does_not_hold_up_another(server, client):
    server.set("/hang", Reply(hang=True))
    server.set("/a", Reply(200, "quick"))
    stuck = threading.Thread(target=lambda: failure(client, "/hang"))
    stuck.start()
    wait_for = time.monotonic() + 2
    while not server.seen("/hang") and time.monotonic() < wait_for:
        time.sleep(0.01)
    took = timed(lambda: client.request("GET", "/a"))
    stuck.join(5)
    assert took < BOUND / 2


def test_close_drops_every_threads_connection(server, client):
    server.set("/a", Reply(200, "x"))
    other = threading.Thread(target=lambda: client.request("GET", "/a"))
    other.start()
    other.join(5)
    client.request("GET", "/a")
    client.close()
    client.request("GET", "/a")
    assert len({r.peer for r in server.requests}) == 3


# -- through the metadata client and the EC2-protocol watchers ---------------------------------

from datetime import datetime, timezone  # noqa: E402

from agent.clock import Clock  # noqa: E402
from agent.clouds._shared.token_client import MetadataError  # noqa: E402
from agent.clouds.aws import CLOUD as AWS_CLOUD  # noqa: E402
from agent.clouds.aws.config import AwsConfig  # noqa: E402
from agent.clouds.aws.watchers import parse_spot_action  # noqa: E402
from tests.fakes.hostile_metadata import (  # noqa: E402
    INSTANCE_ID,
    SPOT,
    TOKEN_PATH,
    spot_action,
)

IID = "i-0123456789abcdef0"


def aws_watchers(url: str, **settings: object) -> dict[str, object]:
    config = AwsConfig(metadata_url=url, timeout=BOUND, max_backoff=5.0, **settings)  # type: ignore[arg-type]
    return {w.name: w for w in AWS_CLOUD.watchers(config, Clock())}


@pytest.fixture
def imds() -> Iterator[HostileMetadata]:
    with HostileMetadata() as fake:
        fake.aws(IID)
        yield fake


def test_a_redirected_token_put_sends_nothing_elsewhere(imds, other):
    imds.set(TOKEN_PATH, redirect(f"{other.url}/latest/api/token", 307), "PUT")
    spot = aws_watchers(imds.url)["aws-spot"]
    with pytest.raises(MetadataError, match="not followed"):
        spot.poll()  # type: ignore[attr-defined]
    assert other.requests == []


def test_a_redirected_get_is_a_metadata_error_and_never_a_notice(imds, other):
    other.set(SPOT, Reply(200, spot_action()))
    imds.set(SPOT, redirect(f"{other.url}{SPOT}"))
    spot = aws_watchers(imds.url)["aws-spot"]
    with pytest.raises(MetadataError, match=f"redirected to {other.url}{SPOT}, not followed"):
        spot.poll()  # type: ignore[attr-defined]
    assert other.requests == []


@pytest.mark.parametrize("token", ["tok\nX-Forged: 1", "tok\x00en", "a" * 5000, "t o k"])
def test_an_unusable_token_is_refused_and_never_sent(imds, token):
    imds.set(TOKEN_PATH, Reply(200, token), "PUT")
    spot = aws_watchers(imds.url)["aws-spot"]
    with pytest.raises(MetadataError, match="unusable token") as caught:
        spot.poll()  # type: ignore[attr-defined]
    assert token not in str(caught.value)
    assert imds.seen(SPOT) == [] and imds.seen(INSTANCE_ID) == []


@pytest.mark.parametrize("path", [TOKEN_PATH, SPOT])
def test_retry_after_is_capped_by_the_watchers_max_backoff(imds, path):
    imds.set(path, retry_after("99999"), "PUT" if path == TOKEN_PATH else "GET")
    spot = aws_watchers(imds.url)["aws-spot"]
    with pytest.raises(MetadataError) as caught:
        spot.poll()  # type: ignore[attr-defined]
    assert caught.value.retry_after == 5.0


def test_a_slow_watcher_does_not_hold_up_another_on_the_same_instance(imds):
    imds.set("/latest/meta-data/events/recommendations/rebalance", Reply(hang=True))
    found = aws_watchers(imds.url)
    spot, rebalance = found["aws-spot"], found["aws-rebalance"]
    spot.poll()  # type: ignore[attr-defined]  # token and instance id are cached now

    def slow_poll() -> None:
        with pytest.raises(MetadataError):
            rebalance.poll()  # type: ignore[attr-defined]

    stuck = threading.Thread(target=slow_poll)
    stuck.start()
    end = time.monotonic() + 2
    while not imds.seen("/latest/meta-data/events/recommendations/rebalance"):
        assert time.monotonic() < end
        time.sleep(0.01)
    imds.set(SPOT, Reply(200, spot_action("stop")))
    took = timed(spot.poll)  # type: ignore[attr-defined]
    stuck.join(5)
    assert took < BOUND / 2


def test_the_spot_path_is_polled_while_the_instance_id_cannot_be_read(imds):
    imds.set(INSTANCE_ID, Reply(503, "busy"))
    found = aws_watchers(imds.url)
    spot = found["aws-spot"]
    assert spot.poll() == []  # type: ignore[attr-defined]
    assert imds.seen(SPOT)
    with pytest.raises(MetadataError):
        found["aws-rebalance"].poll()  # type: ignore[attr-defined]  # the others still need it

    imds.set(SPOT, Reply(200, spot_action("terminate")))
    (first,) = spot.poll()  # type: ignore[attr-defined]
    assert first.instance_id == "unknown" and first.event_id == "aws:unknown:spot-interruption"

    imds.set(INSTANCE_ID, Reply(200, IID))
    (again,) = spot.poll()  # type: ignore[attr-defined]
    assert again.event_id == first.event_id, "one interruption, one event id"

    imds.clear(SPOT)
    assert spot.poll() == []  # type: ignore[attr-defined]
    imds.set(SPOT, Reply(200, spot_action("terminate")))
    (later,) = spot.poll()  # type: ignore[attr-defined]
    assert later.event_id == f"aws:{IID}:spot-interruption"


NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ('{"action": 1, "time": "2030-01-01T00:02:00Z"}', "unknown"),
        ('{"action": null, "time": "2030-01-01T00:02:00Z"}', "unknown"),
        ('{"time": "2030-01-01T00:02:00Z"}', "unknown"),
        ('{"action": "terminate\\u0000", "time": "2030-01-01T00:02:00Z"}', "unknown"),
        ('{"action": "stop\\nINFO forged", "time": "x"}', "unknown"),
        ('{"action": " STOP ", "time": "2030-01-01T00:02:00Z"}', "stop"),
    ],
)
def test_a_malformed_spot_notice_still_drains_with_a_safe_action(body, action):
    notice = parse_spot_action(body, IID, NOW)
    assert notice.action == action and notice.terminal
    assert notice.event_id == f"aws:{IID}:spot-interruption"


@pytest.mark.parametrize("body", ["<html>captive</html>", "[]", '"terminate"', "{}", "null"])
def test_a_body_that_is_not_a_notice_object_is_not_a_notice(body):
    with pytest.raises(ValueError):
        parse_spot_action(body, IID, NOW)
