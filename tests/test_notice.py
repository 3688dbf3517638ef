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


def test_kinds_are_the_four_documented_names() -> None:
    assert n.KINDS == (
        "spot-interruption",
        "asg-termination",
        "rebalance-recommendation",
        "scheduled-maintenance",
    )
    assert n.TERMINAL_KINDS == {"spot-interruption", "asg-termination"}
