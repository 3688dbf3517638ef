"""The Azure events watcher, approval and shutdown-path check against the Azure mock."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from agent.clock import Clock
from agent.clouds._shared.token_client import MetadataError
from agent.clouds.azure import CLOUD, watchers
from agent.clouds.azure.config import AzureConfig
from agent.clouds.azure.mock import (
    EVENTS_PATH,
    MISSING_HEADER,
    NAME_PATH,
    AzureMockServer,
    defaults,
    event,
)
from agent.notice import ASG_TERMINATION, SCHEDULED_MAINTENANCE, SPOT_INTERRUPTION

VM = "vm-spot"


@pytest.fixture
def azure() -> Iterator[AzureMockServer]:
    with AzureMockServer() as server:
        defaults(server, VM)
        yield server


def section(url: str, **kw) -> AzureConfig:
    return AzureConfig(metadata_url=url, timeout=kw.pop("timeout", 1.0), **kw)


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def raw(server, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_a_preempt_for_this_vm_is_a_termination_with_its_not_before(azure):
    deadline = in_seconds(40)
    item = event("Preempt", [VM], deadline)
    azure.add_event(item)
    (notice,) = watchers.EventsWatcher(section(azure.url), Clock()).poll()
    assert notice.kind == SPOT_INTERRUPTION and notice.deadline == deadline
    assert notice.instance_id == VM
    assert notice.event_id == f"azure:{VM}:spot-interruption:{item['EventId']}"
    assert all(r.headers.get("Metadata") == "true" for r in azure.requests)
    names = [r for r in azure.requests if r.path == NAME_PATH]
    assert len(names) == 1 and "format=text" in names[0].query


def test_events_of_other_vms_are_ignored(azure):
    azure.add_event(event("Preempt", ["vm-other"], in_seconds(40)))
    azure.add_event(event("Reboot", ["vm-third"], in_seconds(900)))
    assert watchers.EventsWatcher(section(azure.url), Clock()).poll() == []


def test_kinds_of_events(azure):
    azure.add_event(event("Terminate", [VM], in_seconds(600)))
    azure.add_event(event("Freeze", [VM], in_seconds(900)))
    kinds = [n.kind for n in watchers.EventsWatcher(section(azure.url), Clock()).poll()]
    assert kinds == [ASG_TERMINATION, SCHEDULED_MAINTENANCE]


def test_the_first_request_may_take_long_without_failing(azure):
    azure.first_call_delay = 1.0
    w = watchers.EventsWatcher(section(azure.url, timeout=0.3, startup_timeout=5.0), Clock())
    assert w.poll() == []
    azure.delay(1.0)  # later requests get the ordinary bound
    with pytest.raises(MetadataError, match="within"):
        w.poll()


def test_throttling_honours_retry_after(azure):
    w = watchers.EventsWatcher(section(azure.url), Clock())
    w.poll()
    azure.fail(1, 429, {"Retry-After": "3"})
    with pytest.raises(MetadataError) as caught:
        w.poll()
    assert caught.value.retry_after == 3
    azure.fail(1, 429)
    with pytest.raises(MetadataError) as caught:
        w.poll()
    assert caught.value.retry_after == 1.0


def test_a_started_event_keeps_the_deadline_it_had(azure):
    deadline = in_seconds(40)
    item = event("Preempt", [VM], deadline)
    azure.add_event(item)
    w = watchers.EventsWatcher(section(azure.url), Clock())
    (first,) = w.poll()
    azure.set_events([dict(item, EventStatus="Started", NotBefore="")])
    (started,) = w.poll()
    assert started.deadline == deadline and started.event_id == first.event_id


def test_a_cancelled_event_disappears(azure):
    item = event("Reboot", [VM], in_seconds(900))
    azure.add_event(item)
    w = watchers.EventsWatcher(section(azure.url), Clock())
    assert len(w.poll()) == 1
    azure.cancel(item["EventId"])
    assert w.poll() == []


def test_approval_after_the_drain(azure):
    item = event("Preempt", [VM], in_seconds(40))
    azure.add_event(item)
    conf = section(azure.url)
    (notice,) = watchers.EventsWatcher(conf, Clock()).poll()
    assert CLOUD.after_drain(notice, conf, Clock()) is True
    assert azure.approved == [item["EventId"]]
    (started,) = json.loads(azure.document())["Events"]
    assert started["EventStatus"] == "Started"


def test_no_approval_when_turned_off(azure):
    azure.add_event(event("Preempt", [VM], in_seconds(40)))
    conf = section(azure.url, approve=False)
    (notice,) = watchers.EventsWatcher(conf, Clock()).poll()
    assert CLOUD.after_drain(notice, conf, Clock()) is False
    assert azure.approved == []


def test_a_failed_approval_is_logged_not_raised(azure, caplog):
    azure.add_event(event("Preempt", [VM], in_seconds(40)))
    conf = section(azure.url)
    (notice,) = watchers.EventsWatcher(conf, Clock()).poll()
    azure.refuse()
    assert CLOUD.after_drain(notice, conf, Clock()) is False
    assert "approving scheduled event" in caplog.text


def test_interrupted_now(azure):
    conf = section(azure.url)
    assert CLOUD.interrupted_now(conf, Clock(), 1.0) is None
    azure.add_event(event("Freeze", [VM], in_seconds(900)))
    azure.add_event(event("Preempt", ["vm-other"], in_seconds(30)))
    assert CLOUD.interrupted_now(conf, Clock(), 1.0) is None
    item = event("Preempt", [VM], None, status="Started")
    azure.add_event(item)
    notice = CLOUD.interrupted_now(conf, Clock(), 1.0)
    assert notice is not None and notice.kind == SPOT_INTERRUPTION
    assert notice.event_id.endswith(item["EventId"])


def test_interrupted_now_is_bounded(azure):
    azure.delay(5)
    started = time.monotonic()
    assert CLOUD.interrupted_now(section(azure.url), Clock(), 0.5) is None
    assert time.monotonic() - started < 1.5


def test_the_mock_answers_as_imds(azure):
    versioned = EVENTS_PATH + "?api-version=2020-07-01"
    assert raw(azure, "GET", versioned, {}) == (400, json.dumps(MISSING_HEADER))
    status, body = raw(azure, "GET", EVENTS_PATH, {"Metadata": "true"})
    assert status == 400 and "api-version" in body
    status, body = raw(azure, "POST", versioned, {"Metadata": "true"}, b"{bad")
    assert status == 400
    assert raw(azure, "POST", versioned, {}, b'{"StartRequests": []}')[0] == 400
    ok = raw(azure, "POST", versioned, {"Metadata": "true"}, b'{"StartRequests": []}')
    assert ok[0] == 200
    status, _ = raw(azure, "GET", versioned, {"Metadata": "true", "X-Forwarded-For": "1.2.3.4"})
    assert status == 403
