"""The GCP watchers and shutdown-path check against the GCP mock on loopback."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from agent.clock import Clock
from agent.clouds._shared.token_client import MetadataError
from agent.clouds.gcp import CLOUD, watchers
from agent.clouds.gcp.config import GcpConfig, HangingWatcherConfig
from agent.clouds.gcp.mock import (
    FLAVOR_SPEC,
    MAINTENANCE_PATH,
    MISSING_HEADER,
    PREEMPTED_PATH,
    GcpMockServer,
    defaults,
)
from agent.mock import Flavor, MockMetadataServer
from agent.notice import SCHEDULED_MAINTENANCE, SPOT_INTERRUPTION
from tests.fakes.clock import FakeClock

INSTANCE = "4520031799277581759"


@pytest.fixture
def gcp() -> Iterator[GcpMockServer]:
    with GcpMockServer() as server:
        defaults(server, instance_id=INSTANCE)
        yield server


def section(url: str, **kw) -> GcpConfig:
    return GcpConfig(metadata_url=url, timeout=1.0, wait_seconds=kw.pop("wait", 5), **kw)


def watcher(server, clock=None, key="preempted", **kw) -> watchers.HangingWatcher:
    conf = section(server.url, **kw)
    identity = watchers.Identity(conf.metadata_url, conf.timeout)
    built = {w.key: w for w in watchers.build(conf, clock or Clock(), identity)}
    return built[watchers.PREEMPTED if key == "preempted" else watchers.MAINTENANCE_EVENT]


def raw_get(server, path: str, headers: dict) -> tuple[int, str, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.headers)
    finally:
        conn.close()


def polled_in_thread(w) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(w.poll()), daemon=True)
    thread.start()
    return thread, out


def test_first_poll_is_a_plain_get_and_every_request_carries_the_flavor(gcp):
    w = watcher(gcp)
    assert w.poll() == []
    polls = [r for r in gcp.requests if r.path == PREEMPTED_PATH]
    assert len(polls) == 1 and "wait_for_change" not in polls[0].query
    assert all(r.headers.get("Metadata-Flavor") == "Google" for r in gcp.requests)
    assert w.interval == 0.0


def test_a_change_ends_the_hanging_get_at_once(gcp):
    w = watcher(gcp, wait=30)
    w.poll()
    thread, out = polled_in_thread(w)
    hanging = gcp.wait_for_request(lambda r: "wait_for_change=true" in r.query, 5)
    query = parse_qs(hanging.query)
    assert query["timeout_sec"] == ["30"] and query["last_etag"][0]
    time.sleep(0.2)  # not synchronisation: the request must still be held
    assert thread.is_alive()
    changed = time.monotonic()
    gcp.set(PREEMPTED_PATH, "TRUE")
    thread.join(5)
    assert time.monotonic() - changed < 0.5
    (notice,) = out[0]
    assert notice.kind == SPOT_INTERRUPTION and notice.instance_id == INSTANCE
    assert (notice.deadline - notice.detected_at).total_seconds() == pytest.approx(30)


def test_already_preempted_at_start_is_a_notice_on_the_first_poll(gcp):
    gcp.set(PREEMPTED_PATH, "TRUE")
    (notice,) = watcher(gcp, notice_seconds=120).poll()
    assert (notice.deadline - notice.detected_at).total_seconds() == pytest.approx(120)


def test_the_deadline_stays_the_first_sighting_across_answers(gcp):
    gcp.set(PREEMPTED_PATH, "TRUE")
    w = watcher(gcp, wait=1)
    (first,) = w.poll()
    (again,) = w.poll()  # the hanging GET times out after 1 s with the same value
    assert again.deadline == first.deadline and again.event_id == first.event_id


def test_maintenance_comes_and_goes(gcp):
    w = watcher(gcp, key="maintenance")
    assert w.poll() == []
    thread, out = polled_in_thread(w)
    gcp.wait_for_request(lambda r: "wait_for_change" in r.query, 5)
    gcp.set(MAINTENANCE_PATH, "MIGRATE_ON_HOST_MAINTENANCE")
    thread.join(5)
    (notice,) = out[0]
    assert notice.kind == SCHEDULED_MAINTENANCE and notice.action == "migrate"
    thread, out = polled_in_thread(w)
    gcp.set(MAINTENANCE_PATH, "NONE")
    thread.join(5)
    assert out == [[]]
    start = len(gcp.requests)
    assert w.poll() == [], "a notice that went is read again at once, not after a wait"
    assert "wait_for_change" not in gcp.requests[start].query


def test_an_answer_without_the_flavor_header_is_not_the_metadata_server():
    plain = Flavor("plain", ttl_header=None, token_header=None)
    with MockMetadataServer(plain) as server:
        defaults(server)
        with pytest.raises(MetadataError, match="not the GCP metadata server"):
            watcher(server).poll()


def test_503_is_a_failure_and_the_next_request_reads_at_once(gcp):
    w = watcher(gcp)
    w.poll()
    gcp.fail(1, 503)
    with pytest.raises(MetadataError, match="503"):
        w.poll()
    start = len(gcp.requests)
    assert w.poll() == []
    assert "wait_for_change" not in gcp.requests[start].query


def test_refused_connections_are_a_failure(gcp):
    w = watcher(gcp)
    w.poll()
    gcp.refuse()
    with pytest.raises(MetadataError):
        w.poll()


def test_a_missing_key_is_nothing_and_is_not_asked_in_a_tight_loop():
    # A server that never holds requests: the watcher spaces them itself.
    with MockMetadataServer(FLAVOR_SPEC) as server:
        defaults(server)
        server.set(PREEMPTED_PATH, None)
        clock = FakeClock()
        w = watcher(server, clock=clock)
        assert w.poll() == [] and w.poll() == [] and w.poll() == []
        assert clock.waits and all(0 < wait <= watchers.MIN_SPACING for wait in clock.waits)


def test_unreadable_value_is_an_error(gcp):
    gcp.set(PREEMPTED_PATH, "<html>proxy</html>")
    with pytest.raises(ValueError, match="neither TRUE nor FALSE"):
        watcher(gcp).poll()


def test_disabled_watchers_are_not_built(gcp):
    conf = section(gcp.url, maintenance=HangingWatcherConfig(enabled=False))
    built = CLOUD.watchers(conf, Clock())
    assert [w.name for w in built] == ["gcp-preempted"]


def test_interrupted_now(gcp):
    conf = section(gcp.url, notice_seconds=30)
    assert CLOUD.interrupted_now(conf, Clock(), 1.0) is None
    gcp.set(PREEMPTED_PATH, "TRUE")
    notice = CLOUD.interrupted_now(conf, Clock(), 1.0)
    assert notice is not None and notice.kind == SPOT_INTERRUPTION
    assert notice.instance_id == INSTANCE
    assert (notice.deadline - notice.detected_at).total_seconds() == pytest.approx(30)


def test_interrupted_now_is_bounded_when_the_server_hangs(gcp):
    gcp.delay(5)
    started = time.monotonic()
    assert CLOUD.interrupted_now(section(gcp.url), Clock(), 0.5) is None
    assert time.monotonic() - started < 1.5


def test_the_mock_refuses_a_request_without_the_flavor_header_as_google_does(gcp):
    status, body, headers = raw_get(gcp, PREEMPTED_PATH, {})
    assert (status, body.strip()) == (403, MISSING_HEADER)
    assert headers["Metadata-Flavor"] == "Google"
    status, _, _ = raw_get(
        gcp, PREEMPTED_PATH, {"Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.1"}
    )
    assert status == 403


def test_the_mock_answers_a_stale_etag_at_once(gcp):
    status, _, headers = raw_get(
        gcp,
        PREEMPTED_PATH + "?wait_for_change=true&last_etag=0000&timeout_sec=30",
        {"Metadata-Flavor": "Google"},
    )
    assert status == 200 and headers["ETag"]
