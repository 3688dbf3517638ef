"""Azure Scheduled Events documents: real shapes, other VMs' events, damaged ones."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from agent.clouds.azure import parse
from agent.notice import ASG_TERMINATION, SCHEDULED_MAINTENANCE, SPOT_INTERRUPTION

NOW = datetime(2022, 8, 9, 17, 7, 0, tzinfo=timezone.utc)
# Microsoft's documented Preempt example, as a real Spot eviction answered it.
PREEMPT = {
    "EventId": "C1BF4A64-9D6F-4C3B-8F5A-A4D1C4C0A8F1",
    "EventStatus": "Scheduled",
    "EventType": "Preempt",
    "ResourceType": "VirtualMachine",
    "Resources": ["vm-spot"],
    "NotBefore": "Tue, 09 Aug 2022 17:07:32 GMT",
    "Description": "",
    "EventSource": "Platform",
    "DurationInSeconds": -1,
}


def doc(*events, incarnation=3) -> str:
    return json.dumps({"DocumentIncarnation": incarnation, "Events": list(events)})


def test_not_before_rfc1123():
    assert parse.parse_not_before("Mon, 19 Sep 2016 18:29:47 GMT") == datetime(
        2016, 9, 19, 18, 29, 47, tzinfo=timezone.utc
    )


@pytest.mark.parametrize("text", ["", "  ", None, 5, "tomorrow", "2016-09-19T18:29:47Z"])
def test_not_before_blank_or_unreadable(text):
    assert parse.parse_not_before(text) is None


def test_preempt_for_this_vm():
    (event,) = parse.events_for(doc(PREEMPT), "vm-spot")
    notice = parse.to_notice(event, "vm-spot", event.not_before, NOW)
    assert notice.kind == SPOT_INTERRUPTION and notice.terminal
    assert notice.action == "preempt" and notice.provider == "azure"
    assert notice.deadline == datetime(2022, 8, 9, 17, 7, 32, tzinfo=timezone.utc)
    assert notice.event_id == f"azure:vm-spot:spot-interruption:{PREEMPT['EventId']}"
    assert json.loads(notice.raw) == PREEMPT
    assert parse.event_id_of(notice) == PREEMPT["EventId"]


def test_names_are_matched_without_case():
    assert parse.events_for(doc(PREEMPT), "VM-SPOT")


def test_an_event_for_another_vm_is_not_ours():
    other = dict(PREEMPT, Resources=["vm-other", "vm-third"])
    assert parse.events_for(doc(other), "vm-spot") == []


def test_an_event_for_several_vms_including_this_one():
    shared = dict(PREEMPT, Resources=["vm-a", "vm-spot"])
    assert len(parse.events_for(doc(shared), "vm-spot")) == 1


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("Preempt", SPOT_INTERRUPTION),
        ("Terminate", ASG_TERMINATION),
        ("Reboot", SCHEDULED_MAINTENANCE),
        ("Redeploy", SCHEDULED_MAINTENANCE),
        ("Freeze", SCHEDULED_MAINTENANCE),
        ("Hibernate", SCHEDULED_MAINTENANCE),
    ],
)
def test_kinds(event_type, kind):
    assert parse.kind_of(event_type) == kind


def test_empty_document():
    assert parse.events_for(doc(), "vm-spot") == []
    assert parse.parse_document('{"DocumentIncarnation": 0, "Events": []}') == (0, [])


@pytest.mark.parametrize(
    "body",
    [
        "",
        "<html>gateway</html>",
        "[]",
        '{"Events": {}}',
        '{"DocumentIncarnation": "x", "Events": []}',
        '{"DocumentIncarnation": 1}',
    ],
)
def test_not_a_document(body):
    with pytest.raises(ValueError):
        parse.events_for(body, "vm-spot")


@pytest.mark.parametrize(
    "damage",
    [
        {"EventId": None},
        {"EventId": "id with spaces"},
        {"EventId": "X" * 100},
        {"EventType": 7},
        {"EventType": "Pre empt"},
        {"Resources": "vm-spot"},
    ],
)
def test_a_damaged_event_is_skipped_and_hides_no_other(damage, caplog):
    good = dict(PREEMPT, EventId="A1B2C3D4-0000-0000-0000-000000000001")
    events = parse.events_for(doc(dict(PREEMPT, **damage), good, "junk"), "vm-spot")
    assert [e.event_id for e in events] == [good["EventId"]]
    assert "skipping" in caplog.text


def test_a_started_event_has_no_not_before_and_gets_the_minimum_notice():
    started = dict(PREEMPT, EventStatus="Started", NotBefore="")
    (event,) = parse.events_for(doc(started), "vm-spot")
    assert event.not_before is None and event.status == "Started"
    assert parse.fallback_deadline(event, NOW) == NOW + timedelta(seconds=30)
    terminate = dict(started, EventType="Terminate")
    (event,) = parse.events_for(doc(terminate), "vm-spot")
    assert parse.fallback_deadline(event, NOW) == NOW + timedelta(minutes=5)


def test_vm_name():
    assert parse.parse_vm_name("myss_3\n") == "myss_3"
    for bad in ("", "a b", "<html>", "x" * 200):
        with pytest.raises(ValueError):
            parse.parse_vm_name(bad)


def test_approval_body():
    assert json.loads(parse.approval_body("ABC-1")) == {"StartRequests": [{"EventId": "ABC-1"}]}
