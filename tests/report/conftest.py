"""Fixtures for the reporting tests: notices, hook results, loopback receivers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest

from agent.hooks.runner import HookResult
from agent.notice import Notice
from tests.report.receiver import Receiver

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def make_notice(kind: str = "spot-interruption", seconds: float = 120.0, **kw: Any) -> Notice:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return Notice.observed(
        kw.get("provider", "aws"),
        kind,
        kw.get("action", "terminate"),
        kw.get("instance_id", "i-0123456789abcdef0"),
        now + timedelta(seconds=seconds),
        "{}",
        now,
    )


def result(hook: str, outcome: str = "ok", duration: float = 1.5, code: int = 0) -> HookResult:
    return HookResult(hook, outcome, code, "2024-01-01T00:00:00Z", duration, "")


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """``receiver(statuses=[500], hang=False)``: started now, stopped at the end."""
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        r = Receiver(**kw).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
