"""One queue of runs (drains and resumes), one running at a time in a worker thread.

The loop hands it what :mod:`agent.decisions` chose; it launches runs, reports their
progress to systemd, and settles each finished run: the lifecycle event, the next run, or
the exit code.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from agent import decisions as d
from agent import lifecycle as lc
from agent.clock import Clock
from agent.config import Config
from agent.hooks import DRAIN, RESUME
from agent.logs import fields
from agent.notice import Notice
from agent.presence import Presence
from agent.report import Reporter
from agent.runs import CONFIRMING, Run, Worker, run_window
from agent.systemd import Notifier

LOG = logging.getLogger(__name__)

STOP_EXTRA = 5.0
"""Seconds beyond the hooks' end asked of systemd when it stops the agent mid-run."""


@dataclass(frozen=True)
class Queued:
    notice: Notice
    phase: str
    forget: bool = False


class RunQueue:
    def __init__(
        self,
        config: Config,
        clock: Clock,
        lifecycle: lc.Lifecycle,
        presence: Presence,
        worker: Worker,
        notifier: Notifier,
        report: Reporter,
        wake: Callable[[], None],
    ) -> None:
        self.config = config
        self.clock = clock
        self.lifecycle = lifecycle
        self.presence = presence
        self.worker = worker
        self.notifier = notifier
        self.report = report
        self.wake = wake
        self.items: collections.deque[Queued] = collections.deque()
        self.current: Optional[Run] = None

    # -- what the loop asks -------------------------------------------------------------------

    def view(self) -> Optional[d.Running]:
        run = self.current
        if run is None:
            return None
        return d.Running(
            run.notice.event_id,
            run.phase,
            run.notice.terminal,
            run.end,
            run.cancel.is_set(),
            run.followed_by is not None,
        )

    def queued(self, event_id: str, phase: Optional[str] = None) -> bool:
        return any(q.notice.event_id == event_id and phase in (None, q.phase) for q in self.items)

    def busy(self) -> bool:
        return self.current is not None or any(q.phase == DRAIN for q in self.items)

    def running(self, event_id: str) -> bool:
        return self.current is not None and self.current.notice.event_id == event_id

    # -- what the loop tells ------------------------------------------------------------------

    def drain_now(self, notice: Notice) -> None:
        LOG.warning(
            "%s notice %s: action %s, deadline %s; draining",
            notice.kind,
            notice.event_id,
            notice.action,
            notice.deadline.isoformat() if notice.deadline else "none given",
            extra=fields(NOTICE_ID=notice.event_id, PROVIDER=notice.provider, KIND=notice.kind),
        )
        self.lifecycle.apply(notice.event_id, lc.START, notice)
        self.presence.track(notice, self.clock.monotonic())
        self._launch(Queued(notice, DRAIN))

    def cancel_for(self, notice: Notice) -> None:
        """Cut the running advisory drain or resume short; drain ``notice`` right after."""
        run = self.current
        if run is None:
            return
        LOG.warning(
            "%s arrived during the %s %s; cancelling it to drain for the termination",
            notice.kind,
            run.notice.kind,
            run.phase,
            extra=fields(NOTICE_ID=notice.event_id),
        )
        run.cancel.set()
        self.items.appendleft(Queued(notice, DRAIN))

    def bring_forward(self, notice: Notice, end: float) -> None:
        """An earlier termination: the running drain ends by its deadline, then its hooks
        that have not run yet run, before anything is confirmed."""
        run = self.current
        if run is None:
            return
        LOG.warning(
            "%s %s (deadline %s) arrived during the %s drain of %s: that drain ends by the "
            "earlier deadline, then the hooks for %s that have not run yet run",
            notice.kind,
            notice.event_id,
            notice.deadline.isoformat() if notice.deadline else "none given",
            run.notice.kind,
            run.notice.event_id,
            notice.kind,
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind),
        )
        run.end = end  # the runner reads it again while hooks run
        run.followed_by = notice
        # Recorded now, so that a restart drains it too and leaves out the first one's hooks.
        self.lifecycle.apply(notice.event_id, lc.START, notice, after=run.notice.event_id)
        self.items.appendleft(Queued(notice, DRAIN))

    def withdraw(self, notice: Notice, why: str, forget: bool, outcome: str = "") -> None:
        """Queue the resume phase; the record says ``resuming`` until it is over."""
        if outcome:
            LOG.warning(
                "%s notice %s withdrawn: %s; running the resume hooks",
                notice.kind,
                notice.event_id,
                why,
                extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind, OUTCOME=outcome),
            )
        self.lifecycle.apply(notice.event_id, lc.WITHDRAW, withdrawn=why, forget=forget)
        self.items.append(Queued(notice, RESUME, forget))
        if forget:
            self.presence.drop(notice.event_id)
        self.report.outcome(notice, "withdrawn", self.lifecycle.get(notice.event_id) or {})

    def drain_later(self, notice: Notice) -> None:
        """A drain to take up once the drains queued before it are over."""
        self._after_drains(Queued(notice, DRAIN))

    def _after_drains(self, item: Queued) -> None:
        drains = next((i for i, q in enumerate(self.items) if q.phase != DRAIN), None)
        self.items.insert(len(self.items) if drains is None else drains, item)

    def resume_later(self, notice: Notice, forget: bool) -> None:
        self.items.append(Queued(notice, RESUME, forget))

    def forget(self, event_id: str) -> None:
        """Drop a withdrawn notice's record, so the next notice like it drains afresh."""
        if self.lifecycle.status(event_id) is not None:
            self.lifecycle.apply(event_id, lc.FORGET)
        self.presence.drop(event_id)

    # -- running ------------------------------------------------------------------------------

    def next(self, stopping: bool) -> None:
        """Start the next queued run, if none runs (during a stop: drains only)."""
        while self.current is None and self.items:
            item = self.items[0]
            if item.phase == RESUME and stopping:
                return  # they wait in the state file (resuming) for the next start
            self.items.popleft()
            status = self.lifecycle.status(item.notice.event_id)
            if item.phase == RESUME:
                self._launch(item)
            elif d.owed(status, item.notice, self.config.confirm):
                self.drain_now(item.notice)  # not drained or confirmed meanwhile

    def _launch(self, item: Queued) -> None:
        deadline, end = run_window(item.notice, item.phase, self.clock, self.config)
        run = Run(item.notice, item.phase, deadline, end, item.forget)
        if item.phase == DRAIN:
            self.report.notice(item.notice, deadline)
        self.current = run
        event_id = item.notice.event_id
        threading.Thread(
            target=self.worker.run,
            args=(run, lambda: self.presence.gone(event_id), self.wake),
            name=f"{item.phase}-{item.notice.kind}",
            daemon=True,
        ).start()

    def progress(self, stopping: bool) -> str:
        """The status line of the run under way; a stop cuts a confirmation short and asks
        systemd for the time the hooks still need."""
        run = self.current
        if run is None:
            return "idle"
        if run.stage == CONFIRMING:
            why = "stop requested" if stopping else "a termination drains next"
            if (stopping or run.followed_by is not None) and not run.cancel.is_set():
                LOG.info("%s while confirming %s; ending it", why, run.notice.event_id)
                run.cancel.set()
            return f"confirming {run.notice.action}"
        left = max(0.0, run.end - self.clock.monotonic())
        if stopping:
            self.notifier.extend_timeout(left + self.config.kill_grace + STOP_EXTRA)
        doing = "resuming" if run.phase == RESUME else "draining"
        return f"{doing}: {len(run.results)}/{run.total} hooks, {left:.0f} s left"

    def finished(self) -> Optional[Run]:
        run = self.current
        if run is not None and run.done.is_set():
            self.current = None
            return run
        return None

    def settle(self, run: Run, stopping: bool) -> Optional[int]:
        """A finished run moves its notice on: an exit code, or None to keep watching."""
        notice = run.notice
        end = d.run_ended(
            notice,
            run.phase,
            failed=run.failed,
            cancelled=run.cancel.is_set(),
            drained=run.drained,
            followed=run.followed_by is not None,
            forget=run.forget,
            confirm_on=self.config.confirm,
            stopping=stopping,
            confirmation=run.confirmation,
        )
        if end.event is not None:
            self.lifecycle.apply(notice.event_id, end.event, **end.details)
        if end.requeue:  # after the drains that cut it short, first of the resumes
            self._after_drains(Queued(notice, run.phase, run.forget))
        if end.resume:
            self.items.append(Queued(notice, RESUME, True))
            self.presence.drop(notice.event_id)
        if end.event == lc.FORGET:
            self.presence.drop(notice.event_id)
        if run.phase == DRAIN and run.drained and not notice.terminal:
            self.presence.restart(notice.event_id, self.clock.monotonic())
        _log_end(run, end)
        if end.outcome not in ("cancelled", "drained", "stopped"):  # "drained": said by the run
            self.report.outcome(notice, end.outcome, self.lifecycle.get(notice.event_id) or {})
        if end.exit_code is not None:
            what = end.outcome.replace("-", " ")
            what = what if what == "stopped" else f"{what} {notice.action}"
            self.notifier.stopping(what)
            self.report.status(what)
        return end.exit_code


def _log_end(run: Run, end: d.RunEnd) -> None:
    """One line that says what the run came to, with the OUTCOME field."""
    notice = run.notice
    event_id, api = notice.event_id, f"{notice.provider} API"
    detail = run.confirmation.detail if run.confirmation else ""
    lines = {
        "failed": (
            logging.ERROR,
            f"exiting with 1: a restart takes the {run.phase} of {event_id} up again",
        ),
        "cancelled": (logging.WARNING, f"{run.phase} of {event_id} cancelled ({run.summary()})"),
        "resumed": (logging.INFO, f"resume of {event_id} finished: {run.summary()}"),
        "confirmed": (logging.WARNING, f"{event_id} confirmed: {detail}"),
        "withdrawn": (
            logging.WARNING,
            f"{event_id} withdrawn: the notice left metadata and {detail}; "
            "running the resume hooks",
        ),
        "not-confirmed": (logging.ERROR, f"{event_id} not confirmed by the {api}: {detail}"),
        "stopped": (
            logging.WARNING,
            f"stopped while confirming {event_id}; exiting without the API's answer",
        ),
    }
    level, text = lines.get(end.outcome, (logging.INFO, f"drain of {event_id} over"))
    if end.outcome == "drained" and end.message == "cannot be confirmed":
        level, text = logging.WARNING, f"{event_id} cannot be confirmed through the {api}"
        text += "; the notice alone ends the run"
    elif end.outcome == "drained" and end.message == "confirmation is off":
        text = "confirmation is off: the notice alone ends the run"
    elif end.outcome == "resumed" and end.event == lc.FORGET:
        text += "; watching again"
    elif end.message and end.outcome not in ("failed", "stopped"):
        text += f"; {end.message}"
    LOG.log(
        level,
        "%s",
        text,
        extra={
            **fields(NOTICE_ID=event_id, KIND=notice.kind, PHASE=run.phase),
            "OUTCOME": end.outcome,
        },
    )
