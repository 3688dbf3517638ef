"""Notice: the times it reads and writes, its JSON form, and which kinds end the instance."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from agent import notice as n
from agent.notice import Notice, parse_rfc3339

UTC = timezone.utc


def make(**changes: object) -> Notice:
    values: dict[str, object] = {
        "provider": "aws",
        "kind": n.SPOT_INTERRUPTION,
        "action": "terminate",
        "instance_id": "i-0123456789abcdef0",
        "event_id": "aws:i-0123456789abcdef0:spot-interruption",
        "deadline": datetime(2017, 9, 18, 8, 22, tzinfo=UTC),
        "raw": '{"action": "terminate", "time": "2017-09-18T08:22:00Z"}',
        "detected_at": datetime(2017, 9, 18, 8, 20, 1, tzinfo=UTC),
    }
    values.update(changes)
    return Notice(**values)  # type: ignore[arg-type]


# -- parse_rfc3339 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2017-09-18T08:22:00Z",
        "2017-09-18T08:22:00z",
        "  2017-09-18T08:22:00Z\n",
        "2017-09-18T08:22:00+00:00",
        "2017-09-18T16:22:00+08:00",
        "2017-09-18T03:22:00-05:00",
    ],
)
def test_rfc3339_zones_are_honoured(text: str) -> None:
    value = parse_rfc3339(text)
    assert value.tzinfo is not None
    assert value == datetime(2017, 9, 18, 8, 22, tzinfo=UTC)


def test_rfc3339_fractional_seconds() -> None:
    value = parse_rfc3339("2017-09-18T08:22:00.250Z")
    assert value == datetime(2017, 9, 18, 8, 22, 0, 250000, tzinfo=UTC)


def test_rfc3339_keeps_the_offset_it_was_given() -> None:
    value = parse_rfc3339("2017-09-18T16:22:00+08:00")
    assert value.utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize("text", ["2017-09-18T08:22:00", "2017-09-18 08:22:00"])
def test_rfc3339_without_a_zone_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="time without a zone"):
        parse_rfc3339(text)


@pytest.mark.parametrize("text", ["", "soon", "2017-13-01T00:00:00Z", "18 Sep 2017 08:22:00 GMT"])
def test_rfc3339_garbage_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


# -- to_dict / from_dict ------------------------------------------------------------------------


def test_to_dict_is_what_hooks_read() -> None:
    data = make().to_dict()
    assert data == {
        "provider": "aws",
        "kind": "spot-interruption",
        "action": "terminate",
        "instance_id": "i-0123456789abcdef0",
        "event_id": "aws:i-0123456789abcdef0:spot-interruption",
        "deadline": "2017-09-18T08:22:00Z",
        "raw": '{"action": "terminate", "time": "2017-09-18T08:22:00Z"}',
        "detected_at": "2017-09-18T08:20:01Z",
        "terminal": True,
    }


def test_to_dict_writes_utc_whatever_the_zone() -> None:
    east = timezone(timedelta(hours=8))
    data = make(deadline=datetime(2017, 9, 18, 16, 22, tzinfo=east)).to_dict()
    assert data["deadline"] == "2017-09-18T08:22:00Z"


def test_to_json_is_sorted_and_parses_back() -> None:
    text = make().to_json()
    assert json.loads(text) == make().to_dict()
    assert list(json.loads(text)) == sorted(make().to_dict())


@pytest.mark.parametrize(
    "notice",
    [
        make(),
        make(deadline=None, kind=n.REBALANCE_RECOMMENDATION, action="rebalance"),
        make(kind=n.SCHEDULED_MAINTENANCE, action="system-reboot", raw='{"EventId": "e-1"}'),
    ],
    ids=["spot", "no-deadline", "maintenance"],
)
def test_round_trip(notice: Notice) -> None:
    again = Notice.from_dict(notice.to_dict())
    assert again == notice
    assert Notice.from_dict(json.loads(notice.to_json())) == notice


def test_round_trip_drops_sub_second_precision_only() -> None:
    notice = make(detected_at=datetime(2017, 9, 18, 8, 20, 1, 999999, tzinfo=UTC))
    again = Notice.from_dict(notice.to_dict())
    assert again.detected_at == datetime(2017, 9, 18, 8, 20, 1, tzinfo=UTC)
    assert again.deadline == notice.deadline


def test_from_dict_ignores_the_derived_terminal_field() -> None:
    data = make().to_dict()
    data["terminal"] = False
    assert Notice.from_dict(data).terminal is True


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("event_id", None, KeyError),
        ("detected_at", "yesterday", ValueError),
        ("deadline", "2017-09-18T08:22:00", ValueError),
    ],
)
def test_from_dict_damaged_record(field: str, value: object, error: type) -> None:
    data = make().to_dict()
    if value is None:
        del data[field]
    else:
        data[field] = value
    with pytest.raises(error):
        Notice.from_dict(data)


# -- kinds --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "terminal"),
    [
        (n.SPOT_INTERRUPTION, True),
        (n.ASG_TERMINATION, True),
        (n.REBALANCE_RECOMMENDATION, False),
        (n.SCHEDULED_MAINTENANCE, False),
    ],
)
def test_terminal_kinds(kind: str, terminal: bool) -> None:
    assert make(kind=kind).terminal is terminal
    assert make(kind=kind).to_dict()["terminal"] is terminal


def test_kinds_are_the_documented_names() -> None:
    assert n.KINDS == (
        "spot-interruption",
        "asg-termination",
        "rebalance-recommendation",
        "scheduled-maintenance",
        "shutdown",
    )
    assert n.TERMINAL_KINDS == {"spot-interruption", "asg-termination"}


# -- fields from the cloud are made safe where a notice is built ---------------------------------

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def observed(action: object = "terminate", instance_id: str = "i-1", **kw: object) -> Notice:
    return Notice.observed(
        "aws", n.SPOT_INTERRUPTION, action, instance_id, None, kw.pop("raw", "{}"), NOW, **kw
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("action", ["terminate", "stop", "system-reboot", "Warmed:Terminated"])
def test_a_short_printable_action_is_kept(action: str) -> None:
    assert observed(action).action == action


@pytest.mark.parametrize(
    "action",
    [
        "terminate\x00",
        "terminate\nINFO forged",
        "",
        " ",
        "a" * 33,
        "\x1b[31mred",
        5,
        None,
        {"a": 1},
    ],
)
def test_an_unusable_action_becomes_a_stand_in_and_the_notice_stays(action: object) -> None:
    notice = observed(action)
    assert notice.action == n.UNKNOWN_ACTION
    assert notice.terminal and notice.event_id == "aws:i-1:spot-interruption"


def test_ids_are_made_printable_the_same_way_every_time() -> None:
    first = observed(instance_id="i-1\x00\n2 é", cloud_event_id="ev\x1b1")
    again = observed(instance_id="i-1\x00\n2 é", cloud_event_id="ev\x1b1")
    assert first.instance_id == "i-1\\x00\\x0a2\\x20\\xe9"
    assert (
        first.event_id
        == again.event_id
        == "aws:i-1\\x00\\x0a2\\x20\\xe9:spot-interruption:ev\\x1b1"
    )
    assert first.event_id.isprintable()


def test_ids_are_cut_to_a_bounded_length() -> None:
    notice = observed(instance_id="i" * 10_000, cloud_event_id="\x00" * 10_000)
    assert len(notice.instance_id) == n.ID_MAX
    assert len(notice.event_id) <= 2 * n.ID_MAX + 40


def test_only_the_first_part_of_a_huge_payload_is_kept() -> None:
    notice = observed(raw="x" * 1_000_000)
    assert notice.raw == "x" * n.RAW_MAX
    assert len(notice.to_json()) < n.RAW_MAX + 1000


def test_the_action_warning_is_logged_once_per_value(caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(5):
        observed("once\x00only")
    assert sum("once" in r.getMessage() for r in caplog.records) == 1
    assert "\x00" not in caplog.text
