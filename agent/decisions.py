"""What to do next: pure functions of what is recorded, what was observed and the time.

The loop (:mod:`agent.loop`) gathers the facts and carries out the answer; nothing here
touches a thread, a process, a file or a clock, so every rule has a fast test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from agent import exitcodes
from agent import lifecycle as lc
from agent.confirmation import Confirmation, Verdict
from agent.hooks import RESUME
from agent.notice import REBALANCE_RECOMMENDATION, Notice

HIBERNATE = "hibernate"
"""The action of a termination the instance comes back from in the same boot."""

# What to do about a notice seen in metadata.
START = "start"
IGNORE = "ignore"
KNOWN = "known"  # handled before in this boot: say so once
CANCEL_FOR = "cancel-for"  # cancel the running advisory drain or resume, drain this first
BRING_FORWARD = "bring-forward"  # end the running termination drain by this earlier deadline

# What to do about a notice that has left metadata.
WITHDRAW = "withdraw"
FORGET = "forget"
WAIT = "wait"  # decide once the run is over; keep tracking it
UNTRACK = "untrack"
BACK = "back from hibernation"
"""Why a settled termination's notice left: the instance is back (its outcome: resumed)."""


@dataclass(frozen=True)
class Running:
    """What the loop knows of the run under way."""

    event_id: str
    phase: str
    terminal: bool
    end: float
    cancelling: bool = False
    followed: bool = False  # an earlier termination drains right after it


def on_notice(
    status: Optional[str],
    notice: Notice,
    running: Optional[Running],
    queued: bool,
    confirm_on: bool,
    end_if_started: float,
) -> str:
    """A notice present in metadata: START, CANCEL_FOR, BRING_FORWARD, KNOWN or IGNORE."""
    if not owed(status, notice, confirm_on):
        return KNOWN
    reconfirm = status == lc.DRAINED
    if queued:
        return IGNORE
    if running is None:
        return START
    if running.event_id == notice.event_id or not notice.terminal:
        return IGNORE
    if running.cancelling or running.followed:
        return IGNORE  # already making way for a termination
    if running.phase == RESUME or not running.terminal:
        return CANCEL_FOR
    if not reconfirm and end_if_started < running.end:
        return BRING_FORWARD
    return IGNORE  # the first deadline comes first: its confirmation decides


def owed(status: Optional[str], notice: Notice, confirm_on: bool) -> bool:
    """Whether a drain of ``notice`` is still owed: never started, not finished (or of a
    status a newer version wrote), or a termination drained and not yet confirmed."""
    drainable = status is None or status == lc.DRAINING or lc.status_key(status) == lc.UNKNOWN
    return drainable or (status == lc.DRAINED and notice.terminal and confirm_on)


def on_gone(
    status: Optional[str], notice: Notice, busy: bool, resume_queued: bool
) -> tuple[str, str]:
    """A notice that left metadata: (WITHDRAW | FORGET | WAIT | IGNORE | UNTRACK, why)."""
    if resume_queued:
        return IGNORE, ""
    back = notice.terminal and notice.action == HIBERNATE and status in lc.SETTLED
    if back or (status == lc.DRAINED and not notice.terminal):
        if busy:
            return WAIT, ""
        return WITHDRAW, BACK if back else "withdrawn"
    if status == lc.WITHDRAWN:
        return FORGET, ""
    if status is not None and (lc.unfinished(status) or status in lc.SETTLED):
        return WAIT, ""  # a drain to come, or a termination whose confirmation decides
    return UNTRACK, ""


def expired(
    status: Optional[str], notice: Notice, drained_for: float, after: float, busy: bool
) -> bool:
    """A drained rebalance recommendation that has not become a termination in ``after``
    seconds is withdrawn (its record kept, as it stays in metadata)."""
    return (
        notice.kind == REBALANCE_RECOMMENDATION
        and after > 0
        and not busy
        and drained_for >= after
        and status == lc.DRAINED
    )


@dataclass(frozen=True)
class RunEnd:
    """How a finished run moves its notice on."""

    outcome: (
        str  # failed, cancelled, resumed, drained, confirmed, not-confirmed, withdrawn, stopped
    )
    exit_code: Optional[int] = None  # None: keep watching
    event: Optional[str] = None  # lifecycle event to apply
    details: dict[str, Any] = field(default_factory=dict)
    requeue: bool = False  # a run cut short runs again, after the drains that cut it short
    resume: bool = False  # queue the resume phase
    message: str = ""


def run_ended(
    notice: Notice,
    phase: str,
    *,
    failed: bool,
    cancelled: bool,
    drained: bool,
    followed: bool,
    forget: bool,
    confirm_on: bool,
    stopping: bool,
    confirmation: Optional[Confirmation],
) -> RunEnd:
    """The end of a drain or resume (and of a termination's confirmation)."""
    if failed:
        return RunEnd("failed", exitcodes.FAILURE, message="a restart takes it up again")
    if phase == RESUME:
        if cancelled:
            return RunEnd("cancelled", requeue=True, message="runs again after the termination")
        return RunEnd("resumed", event=lc.FORGET if forget else lc.RESUME_DONE)
    if cancelled and not drained:
        return RunEnd("cancelled", requeue=True, message="what did not finish runs again")
    if followed or not notice.terminal:
        return RunEnd("drained")
    end = _settle(notice, confirm_on, stopping, cancelled, confirmation)
    if end.exit_code is not None and notice.action == HIBERNATE and not stopping:
        return RunEnd(
            end.outcome,
            None,
            end.event,
            end.details,
            message="the instance hibernates and comes back in this boot; watching on, the "
            "resume hooks run once the notice has left the metadata service",
        )
    return end


def _settle(
    notice: Notice,
    confirm_on: bool,
    stopping: bool,
    cancelled: bool,
    found: Optional[Confirmation],
) -> RunEnd:
    if not confirm_on:
        return RunEnd(
            "drained",
            exitcodes.FINISHED,
            lc.UNANSWERED,
            {"confirmation": "confirmation is off"},
            message="confirmation is off",
        )
    if stopping and cancelled and (found is None or found.verdict is Verdict.UNKNOWN):
        detail = {"confirmation": "stopped while confirming"}
        return RunEnd("stopped", exitcodes.FINISHED, lc.UNANSWERED, detail)
    if found is None:
        detail = {"confirmation": "cannot be confirmed"}
        return RunEnd(
            "drained", exitcodes.FINISHED, lc.UNANSWERED, detail, message=detail["confirmation"]
        )
    if found.verdict is Verdict.CONFIRMED:
        return RunEnd("confirmed", exitcodes.FINISHED, lc.CONFIRM, {"confirmation": found.detail})
    if found.verdict is Verdict.WITHDRAWN:
        details = {"withdrawn": found.detail, "forget": True}
        return RunEnd("withdrawn", None, lc.WITHDRAW, details, resume=True)
    return RunEnd(
        "not-confirmed", exitcodes.NOT_CONFIRMED, lc.NOT_CONFIRM, {"confirmation": found.detail}
    )
