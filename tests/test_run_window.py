"""The time a run gets: the agent's own margins never cost hooks their turn, and nothing a
notice says (a deadline years ahead, or already past) stretches a drain or a confirmation
beyond ``max_run_time``.

Time comes from the fake clock, so every figure is exact.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Optional

import pytest

from agent.config import Config
from agent.hooks import DRAIN, RESUME
from agent.notice import SPOT_INTERRUPTION, Notice
from agent.runs import MARGIN_SHARE, PAST_DEADLINE_WINDOW, confirmation_end, run_window
from tests.fakes.clock import FakeClock

TEN_YEARS = timedelta(days=3653)


def notice(deadline: Optional[datetime]) -> Notice:
    return Notice(
        provider="aws",
        kind=SPOT_INTERRUPTION,
        action="terminate",
        instance_id="i-1",
        event_id="aws:i-1:spot-interruption",
        deadline=deadline,
        raw="{}",
        detected_at=FakeClock().now(),
    )


def window(
    clock: FakeClock, seconds: Optional[float], phase: str = DRAIN, **settings: Any
) -> tuple[datetime, float]:
    """``run_window`` for a notice ``seconds`` from now (None: no deadline), as
    (deadline told to hooks, seconds until the run's end)."""
    deadline = None if seconds is None else clock.now() + timedelta(seconds=seconds)
    told, end = run_window(notice(deadline), phase, clock, Config(**settings))
    return told, end - clock.monotonic()


# -- the drain's window ------------------------------------------------------------------------


def test_an_ordinary_notice_ends_the_margin_before_its_deadline() -> None:
    clock = FakeClock()
    told, left = window(clock, 120, safety_margin=10)
    assert told == clock.now() + timedelta(seconds=120)
    assert left == pytest.approx(110)


@pytest.mark.parametrize("margin", [30.0, 120.0, 200.0])
def test_a_margin_at_or_above_the_window_is_clamped_to_a_quarter_of_it(margin: float) -> None:
    clock = FakeClock()
    told, left = window(clock, 120, safety_margin=margin)
    assert told == clock.now() + timedelta(seconds=120), "hooks are told the real deadline"
    assert left == pytest.approx(120 * (1 - MARGIN_SHARE))
    assert left > 0, "the margin never leaves hooks no time at all"


def test_a_short_notice_keeps_three_quarters_of_itself_for_hooks() -> None:
    clock = FakeClock()
    _, left = window(clock, 30, safety_margin=10)
    assert left == pytest.approx(22.5)


@pytest.mark.parametrize("ago", [0.0, 1.0, 60.0, 3600.0])
def test_a_deadline_already_past_gives_the_past_deadline_window(
    ago: float, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    with caplog.at_level("WARNING", logger="agent.runs"):
        told, left = window(clock, -ago, safety_margin=200)
    assert told == clock.now() + timedelta(seconds=PAST_DEADLINE_WINDOW)
    assert left == pytest.approx(PAST_DEADLINE_WINDOW * (1 - MARGIN_SHARE))
    assert "already past" in caplog.text


def test_a_deadline_ten_years_ahead_is_bounded_by_max_run_time() -> None:
    clock = FakeClock()
    told, left = window(clock, TEN_YEARS.total_seconds(), safety_margin=10, max_run_time=600)
    assert told == clock.now() + TEN_YEARS, "hooks are told what the notice said"
    assert left == pytest.approx(590)


def test_a_notice_without_a_deadline_gets_max_run_time() -> None:
    clock = FakeClock()
    told, left = window(clock, None, safety_margin=10, max_run_time=300)
    assert told == clock.now() + timedelta(seconds=300)
    assert left == pytest.approx(290)


def test_a_resume_gets_max_run_time_whatever_the_notice_said() -> None:
    clock = FakeClock()
    told, left = window(clock, -60, phase=RESUME, safety_margin=10, max_run_time=300)
    assert told == clock.now() + timedelta(seconds=300)
    assert left == pytest.approx(300)


# -- the confirmation's budget ------------------------------------------------------------------


def test_a_confirmation_runs_to_the_deadline_plus_the_grace() -> None:
    clock = FakeClock()
    end = confirmation_end(clock.now() + timedelta(seconds=90), clock, Config(confirm_grace=60))
    assert end - clock.monotonic() == pytest.approx(150)


@pytest.mark.parametrize("ahead", [timedelta(hours=2), timedelta(days=30), TEN_YEARS])
def test_a_far_deadline_bounds_the_confirmation_by_max_run_time_plus_the_grace(
    ahead: timedelta,
) -> None:
    clock = FakeClock()
    config = Config(max_run_time=600, confirm_grace=60)
    end = confirmation_end(clock.now() + ahead, clock, config)
    assert end - clock.monotonic() == pytest.approx(660)


def test_the_confirmation_bound_counts_from_when_confirmation_starts() -> None:
    """Hooks ran first: the budget is max_run_time from now, not from the notice."""
    clock = FakeClock()
    deadline = clock.now() + TEN_YEARS
    clock.advance(500)
    end = confirmation_end(deadline, clock, Config(max_run_time=600, confirm_grace=60))
    assert end - clock.monotonic() == pytest.approx(660)


def test_a_past_deadline_leaves_the_confirmation_only_what_remains_of_the_grace() -> None:
    clock = FakeClock()
    end = confirmation_end(clock.now() - timedelta(seconds=20), clock, Config(confirm_grace=60))
    assert end - clock.monotonic() == pytest.approx(40)
