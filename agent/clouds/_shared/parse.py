"""What the clouds' pure parsers share: a metadata value that must match a pattern, and a
termination time so far past that it is a leftover rather than a notice."""

from __future__ import annotations

import functools
import logging
import re
from datetime import datetime, timedelta

STALE_AFTER = timedelta(hours=1)
"""A termination time this far behind the clock is a leftover, not a notice."""


def matching(body: str, pattern: re.Pattern[str], what: str) -> str:
    """``body`` without surrounding blanks when all of it matches ``pattern``; otherwise
    ValueError ``<what>: <the body, cut short>`` (an error page, an empty body)."""
    value = body.strip()
    if not pattern.fullmatch(value):
        raise ValueError(f"{what}: {body[:80]!r}")
    return value


def stale(deadline: datetime, now: datetime, shown: str, log: logging.Logger) -> bool:
    """Whether a termination time is long past (:data:`STALE_AFTER`): a leftover that must
    never start a drain. Said on ``log`` once per distinct value, not once per poll."""
    if deadline >= now - STALE_AFTER:
        return False
    _warn_stale(log, shown)
    return True


@functools.lru_cache(maxsize=8)
def _warn_stale(log: logging.Logger, shown: str) -> None:
    log.warning("termination-time %r is long past; ignoring it", shown)
