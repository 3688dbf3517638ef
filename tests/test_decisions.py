"""Every decision of the loop, as pure functions: no threads, no processes, no clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pytest

from agent import decisions as d
from agent import exitcodes
from agent import lifecycle as lc
from agent.confirmation import Confirmation, Verdict
from agent.notice import (
    ASG_TERMINATION,
    REBALANCE_RECOMMENDATION,
    SCHEDULED_MAINTENANCE,
    SPOT_INTERRUPTION,
    Notice,
)

NOW = datetime(2026, 1, 5, 18, 0, tzinfo=timezone.utc)


def notice(kind: str = SPOT_INTERRUPTION, action: str = "terminate", ev: str = "") -> Notice:
    return Notice(
        provider="aws",
        kind=kind,
        action=action,
        instance_id="i-1",
        event_id=ev or f"aws:i-1:{kind}",
        deadline=NOW + timedelta(minutes=2),
        raw="{}",
        detected_at=NOW,
    )


def running(kind: str = SPOT_INTERRUPTION, phase: str = "drain", **kw: Any) -> d.Running:
    terminal = kind in (SPOT_INTERRUPTION, ASG_TERMINATION)
    values: dict[str, Any] = {"end": 100.0, "cancelling": False, "followed": False, **kw}
    return d.Running(f"aws:i-1:{kind}", phase, terminal, **values)


# -- a notice present in metadata --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, d.START),
        (lc.DRAINING, d.START),  # taken up again after a restart or a cancel
        ("from-a-newer-version", d.START),
        (lc.DRAINED, d.START),  # a termination drained but not confirmed: confirm it
        (lc.CONFIRMED, d.KNOWN),
        (lc.NOT_CONFIRMED, d.KNOWN),
        (lc.RESUMING, d.KNOWN),
        (lc.WITHDRAWN, d.KNOWN),
    ],
)
def test_a_notice_with_nothing_running(status: Optional[str], expected: str) -> None:
    assert d.on_notice(status, notice(), None, False, True, 0.0) == expected


def test_a_drained_termination_is_not_drained_again_without_confirmation() -> None:
    assert d.on_notice(lc.DRAINED, notice(), None, False, False, 0.0) == d.KNOWN


def test_a_drained_advisory_notice_is_known() -> None:
    rebalance = notice(REBALANCE_RECOMMENDATION, "rebalance")
    assert d.on_notice(lc.DRAINED, rebalance, None, False, True, 0.0) == d.KNOWN


def test_a_queued_notice_is_not_started_twice() -> None:
    assert d.on_notice(None, notice(), None, True, True, 0.0) == d.IGNORE


def test_the_running_notice_seen_again_is_ignored() -> None:
    assert d.on_notice(lc.DRAINING, notice(), running(), False, True, 50.0) == d.IGNORE


@pytest.mark.parametrize(
    "run",
    [running(REBALANCE_RECOMMENDATION), running(SCHEDULED_MAINTENANCE), running(phase="resume")],
    ids=["rebalance-drain", "maintenance-drain", "a-resume"],
)
def test_a_termination_cancels_an_advisory_drain_or_a_resume(run: d.Running) -> None:
    asg = notice(ASG_TERMINATION)
    if run.phase == "resume":
        run = d.Running("aws:i-1:other", "resume", True, 100.0)
    assert d.on_notice(None, asg, run, False, True, 50.0) == d.CANCEL_FOR


def test_an_advisory_notice_never_cancels_anything() -> None:
    rebalance = notice(REBALANCE_RECOMMENDATION, "rebalance")
    assert d.on_notice(None, rebalance, running(ASG_TERMINATION), False, True, 1.0) == d.IGNORE


def test_while_making_way_nothing_else_is_decided() -> None:
    run = running(REBALANCE_RECOMMENDATION, cancelling=True)
    assert d.on_notice(None, notice(), run, False, True, 50.0) == d.IGNORE
    run = running(ASG_TERMINATION, followed=True)
    assert d.on_notice(None, notice(), run, False, True, 50.0) == d.IGNORE


def test_an_earlier_termination_brings_the_running_drain_forward() -> None:
    run = running(ASG_TERMINATION, end=100.0)
    assert d.on_notice(None, notice(), run, False, True, 50.0) == d.BRING_FORWARD
    assert d.on_notice(None, notice(), run, False, True, 150.0) == d.IGNORE


# -- a notice that left metadata ---------------------------------------------------------------


def test_a_drained_advisory_notice_that_left_is_withdrawn_once_nothing_runs() -> None:
    rebalance = notice(REBALANCE_RECOMMENDATION, "rebalance")
    assert d.on_gone(lc.DRAINED, rebalance, False, False) == (d.WITHDRAW, "withdrawn")
    assert d.on_gone(lc.DRAINED, rebalance, True, False) == (d.WAIT, "")


def test_a_hibernated_instance_is_back_when_its_notice_leaves() -> None:
    back = notice(action="hibernate")
    for status in lc.SETTLED:
        assert d.on_gone(status, back, False, False) == (d.WITHDRAW, "back from hibernation")


def test_a_terminated_notice_that_leaves_waits_for_its_confirmation() -> None:
    assert d.on_gone(lc.DRAINED, notice(), False, False) == (d.WAIT, "")
    assert d.on_gone(lc.DRAINING, notice(), False, False) == (d.WAIT, "")


def test_a_withdrawn_notice_that_leaves_is_forgotten() -> None:
    rebalance = notice(REBALANCE_RECOMMENDATION, "rebalance")
    assert d.on_gone(lc.WITHDRAWN, rebalance, False, False) == (d.FORGET, "")


def test_a_notice_never_acted_on_is_untracked_and_a_queued_resume_ignored() -> None:
    assert d.on_gone(None, notice(), False, False) == (d.UNTRACK, "")
    assert d.on_gone(lc.RESUMING, notice(), False, True) == (d.IGNORE, "")


def test_a_rebalance_expires_only_when_drained_idle_and_old_enough() -> None:
    rebalance = notice(REBALANCE_RECOMMENDATION, "rebalance")
    assert d.expired(lc.DRAINED, rebalance, 3600, 3600, False)
    assert not d.expired(lc.DRAINED, rebalance, 3599, 3600, False)
    assert not d.expired(lc.DRAINED, rebalance, 9999, 3600, True)
    assert not d.expired(lc.DRAINED, rebalance, 9999, 0, False)
    assert not d.expired(lc.WITHDRAWN, rebalance, 9999, 3600, False)
    assert not d.expired(lc.DRAINED, notice(), 9999, 3600, False)


# -- a run that ended --------------------------------------------------------------------------


def ended(n: Notice, phase: str = "drain", **kw: Any) -> d.RunEnd:
    values: dict[str, Any] = {
        "failed": False,
        "cancelled": False,
        "drained": True,
        "followed": False,
        "forget": False,
        "confirm_on": True,
        "stopping": False,
        "confirmation": None,
        **kw,
    }
    return d.run_ended(n, phase, **values)


def test_a_failed_run_exits_1_for_a_restart() -> None:
    assert ended(notice(), failed=True).exit_code == exitcodes.FAILURE


@pytest.mark.parametrize(
    ("verdict", "outcome", "code", "event"),
    [
        (Verdict.CONFIRMED, "confirmed", exitcodes.FINISHED, lc.CONFIRM),
        (Verdict.UNKNOWN, "not-confirmed", exitcodes.NOT_CONFIRMED, lc.NOT_CONFIRM),
        (Verdict.WITHDRAWN, "withdrawn", None, lc.WITHDRAW),
    ],
)
def test_a_terminations_confirmation_settles_it(
    verdict: Verdict, outcome: str, code: Optional[int], event: str
) -> None:
    end = ended(notice(), confirmation=Confirmation(verdict, "seen"))
    assert (end.outcome, end.exit_code, end.event) == (outcome, code, event)
    assert end.resume is (verdict is Verdict.WITHDRAWN)


def test_without_confirmation_the_notice_alone_ends_the_run() -> None:
    for end in (ended(notice(), confirm_on=False), ended(notice(), confirmation=None)):
        assert end.exit_code == exitcodes.FINISHED
        assert end.event == lc.UNANSWERED, "recorded, so a restart does not ask again"


def test_a_stop_during_confirmation_exits_0_without_an_answer() -> None:
    unknown = Confirmation(Verdict.UNKNOWN, "cancelled")
    end = ended(notice(), stopping=True, cancelled=True, confirmation=unknown)
    assert (end.outcome, end.exit_code, end.event) == ("stopped", exitcodes.FINISHED, lc.UNANSWERED)


def test_a_hibernating_instance_keeps_watching_unless_stopped() -> None:
    confirmed = Confirmation(Verdict.CONFIRMED, "seen")
    end = ended(notice(action="hibernate"), confirmation=confirmed)
    assert (end.exit_code, end.event) == (None, lc.CONFIRM)
    stopped = ended(notice(action="hibernate"), confirmation=confirmed, stopping=True)
    assert stopped.exit_code == exitcodes.FINISHED


def test_advisory_and_followed_drains_keep_watching() -> None:
    rebalance = notice(REBALANCE_RECOMMENDATION, "rebalance")
    assert ended(rebalance).exit_code is None
    assert ended(notice(), followed=True).exit_code is None


def test_a_cancelled_drain_or_resume_stays_unfinished_and_runs_again() -> None:
    drain = ended(notice(), cancelled=True, drained=False)
    assert drain.requeue and drain.event is None and drain.exit_code is None
    resume = ended(notice(), "resume", cancelled=True)
    assert resume.requeue and resume.event is None


def test_a_finished_resume_forgets_or_keeps_the_record() -> None:
    assert ended(notice(), "resume", forget=True).event == lc.FORGET
    assert ended(notice(), "resume", forget=False).event == lc.RESUME_DONE
