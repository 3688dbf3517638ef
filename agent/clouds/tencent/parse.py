"""Tencent Cloud's spot termination time into a notice: pure functions, unit-tested.

``/latest/meta-data/spot/termination-time`` answers ``2018-08-18 12:05:33`` in China
Standard Time (UTC+8) with no zone in the text; a localised console shows the same moment
as ``18/08/2018 12:05:33`` or with slashes or dots. 404 means nothing is scheduled.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Optional

from agent import notice as n
from agent.clouds._shared.parse import matching, stale
from agent.notice import Notice, parse_rfc3339

LOG = logging.getLogger(__name__)

NAME = "tencent"
CST = timezone(timedelta(hours=8), "UTC+8")
_YEAR_FIRST = re.compile(
    r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})[ Tt]+(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?"
    r"(Z|z|[+-]\d{2}:?\d{2})?"
)
_YEAR_LAST = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})[ ]+(\d{1,2}):(\d{2}):(\d{2})")
_INSTANCE_ID = re.compile(r"ins-[a-z0-9]{4,32}")


def parse_termination_time(text: str) -> datetime:
    """The termination time as aware UTC; ValueError for a body that is not a time.

    Without a zone the text is UTC+8, as the service documents; an explicit ``Z`` or
    offset is honoured. Day-first ``18/08/2018`` is the localised form; a date whose
    second field cannot be a month (``08/18/2018``) is read month-first.
    """
    value = text.strip()
    try:
        match = _YEAR_FIRST.fullmatch(value)
        if match is not None:
            year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
            zone = match.group(7)
            if zone:
                iso = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
                offset = zone if zone in ("Z", "z") or ":" in zone else zone[:3] + ":" + zone[3:]
                return parse_rfc3339(iso + offset).astimezone(timezone.utc)
        else:
            last = _YEAR_LAST.fullmatch(value)
            if last is None:
                raise ValueError("unknown format")
            first, middle, year, hour, minute, second = (int(g) for g in last.groups())
            day, month = (middle, first) if middle > 12 >= first else (first, middle)
        local = datetime(year, month, day, hour, minute, second, tzinfo=CST)
    except ValueError as exc:
        raise ValueError(f"termination-time is not a time ({exc}): {value[:80]!r}") from None
    return local.astimezone(timezone.utc)


def parse_instance_id(body: str) -> str:
    """``ins-xxxxxxxx``; ValueError for anything else (an error page, an empty body)."""
    return matching(body, _INSTANCE_ID, "instance-id is not a Tencent instance id")


def parse_notice(body: Optional[str], instance_id: str, now: datetime) -> Optional[Notice]:
    """The termination-time body into a notice; None (404) or blank means none pending.

    Keyed on instance and kind: an instance is reclaimed once, whatever the body says.
    """
    if body is None or not body.strip():
        return None
    deadline = parse_termination_time(body)
    if stale(deadline, now, body.strip()[:80], LOG):
        return None
    return Notice.observed(
        NAME, n.SPOT_INTERRUPTION, "terminate", instance_id, deadline, body.strip(), now
    )
