"""Tencent's termination time: UTC+8 without a zone, localised forms, damaged bodies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.clouds.tencent import parse
from agent.notice import SPOT_INTERRUPTION

UTC_0405 = datetime(2018, 8, 18, 4, 5, 33, tzinfo=timezone.utc)
NOW = UTC_0405 - timedelta(minutes=2)


@pytest.mark.parametrize(
    "text",
    [
        "2018-08-18 12:05:33",  # as documented: China Standard Time
        "2018-08-18 12:05:33\n",
        "2018/08/18 12:05:33",
        "2018.08.18 12:05:33",
        "2018-08-18T12:05:33",
        "2018-8-18 12:05:33",
        "18/08/2018 12:05:33",  # a localised console, day first
        "18-08-2018 12:05:33",
        "08/18/2018 12:05:33",  # month first: 18 cannot be a month
        "2018-08-18T04:05:33Z",  # an explicit zone is honoured
        "2018-08-18T12:05:33+08:00",
        "2018-08-18 12:05:33+0800",
    ],
)
def test_termination_times(text):
    assert parse.parse_termination_time(text) == UTC_0405


@pytest.mark.parametrize(
    "text",
    ["", "soon", "2018-13-18 12:05:33", "2018-08-18", "1534565133", "<html>404</html>"],
)
def test_not_a_time(text):
    with pytest.raises(ValueError, match="termination-time is not a time"):
        parse.parse_termination_time(text)


def test_notice():
    notice = parse.parse_notice("2018-08-18 12:05:33", "ins-r8hr2upy", NOW)
    assert notice is not None
    assert notice.kind == SPOT_INTERRUPTION and notice.action == "terminate"
    assert notice.provider == "tencent" and notice.deadline == UTC_0405
    assert notice.event_id == "tencent:ins-r8hr2upy:spot-interruption"


@pytest.mark.parametrize("body", [None, "", "  \n"])
def test_nothing_scheduled(body):
    assert parse.parse_notice(body, "ins-1234abcd", NOW) is None


def test_a_long_past_time_is_a_leftover(caplog):
    later = UTC_0405 + timedelta(hours=2)
    assert parse.parse_notice("2018-08-18 12:05:33", "ins-1234abcd", later) is None
    assert "long past" in caplog.text


def test_instance_ids():
    assert parse.parse_instance_id("ins-r8hr2upy\n") == "ins-r8hr2upy"
    for bad in ("", "i-0123456789abcdef0", "ins-", "<html>"):
        with pytest.raises(ValueError):
            parse.parse_instance_id(bad)
