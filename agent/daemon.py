"""The loop: watch metadata, drain on a notice, confirm, exit. It knows no cloud.

Watchers are polled on their own schedules from the main thread; a drain runs in a worker
thread, so polling (and the systemd watchdog) go on while hooks run. A termination that
arrives during an advisory drain (say, a rebalance recommendation) or during a resume
cancels it and starts at once; one with an earlier deadline than the termination being
drained brings that drain's end forward and drains right after it. After a termination
drain the same worker confirms through the cloud API, for minutes if need be, while the
loop keeps polling: a notice that leaves the metadata service while the API shows the
instance unaffected is withdrawn, and the resume hooks run (docs/confirmation.md).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from agent import exitcodes, state
from agent.clock import Clock
from agent.config import Config
from agent.drain import CONFIRMING, Drain, HookSource, Worker, discover_hooks, run_window
from agent.hooks import DRAIN, RESUME
from agent.logs import fields
from agent.notice import REBALANCE_RECOMMENDATION, Notice
from agent.providers.base import Provider, Verdict, Watcher
from agent.retry import Backoff, RateLimitedLog
from agent.systemd import Notifier

LOG = logging.getLogger(__name__)

FAILURE_LOG_EVERY = 60.0
MAX_SLEEP = 1.0
GONE_POLLS = 2
"""Successful polls in a row without a notice before it counts as gone from metadata."""
HIBERNATE = "hibernate"
"""The action of a termination the instance comes back from in the same boot."""
SETTLED = (state.DRAINED, state.CONFIRMED, state.NOT_CONFIRMED)
"""Statuses of a termination whose drain (and confirmation) is over."""


@dataclass
class _Schedule:
    watcher: Watcher
    backoff: Backoff
    failures: RateLimitedLog
    due: float = 0.0
    ok: bool = False  # the last poll answered


@dataclass
class _Tracked:
    """A notice seen in metadata, to tell when it has gone (withdrawn) from there."""

    notice: Notice
    watcher: Optional[str]  # None: from the state file, not seen by a watcher yet
    since: float  # first seen, or when its drain ended
    misses: dict[str, int] = field(default_factory=dict)


def _failure_kind(exc: BaseException) -> str:
    """Failures alike for log rate limiting: same type, same text once digits are dropped."""
    return type(exc).__name__ + "".join(c for c in str(exc)[:80] if not c.isdigit())


class Daemon:
    def __init__(
        self,
        config: Config,
        provider: Provider,
        clock: Clock,
        notifier: Notifier,
        store: state.StateStore,
        hook_source: Optional[HookSource] = None,
    ) -> None:
        self.config = config
        self.provider = provider
        self.clock = clock
        self.notifier = notifier
        self.state = store
        hooks = hook_source or (lambda: discover_hooks(config))
        self.worker = Worker(config, provider, clock, notifier, store, hooks, lambda: self._stop)
        self._drain: Optional[Drain] = None
        self._pending: Optional[Notice] = None
        self._stop = False
        self._seen: set[str] = set()
        self._tracked: dict[str, _Tracked] = {}
        self._resumes: list[tuple[Notice, bool]] = []
        self._watcher_names: list[str] = []

    # -- signals -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a flag. Waking the loop would take the lock of the clock's Event, which the
        # interrupted main thread may hold (Event.wait/clear): a deadlock. The loop never
        # sleeps longer than MAX_SLEEP, so it sees the flag soon enough.
        self._stop = True

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        try:
            # Now, not when first needed: a package upgrade replaces the agent's files under
            # the running daemon, and a later import could fail or mix two versions.
            self.provider.preload()
        except Exception:
            LOG.exception(
                "cannot load the %s API module; confirmation will fail", self.provider.name
            )
        schedules = [
            _Schedule(
                w,
                Backoff(w.interval, max(w.interval, self._max_backoff())),
                RateLimitedLog(LOG, FAILURE_LOG_EVERY, self.clock.monotonic),
            )
            for w in self.provider.watchers(self.config, self.clock)
        ]
        self._watcher_names = [s.watcher.name for s in schedules]
        self.state.load()
        intervals = ", ".join(f"{s.watcher.name} every {s.watcher.interval:g}s" for s in schedules)
        self.notifier.ready(f"watching {self.provider.name}: {intervals}")
        LOG.info("watching %s: %s", self.provider.name, intervals or "no watcher enabled")
        self._pick_up()
        while True:
            code = self._step(schedules)
            if code is not None:
                return code
            self.notifier.ping()
            now = self.clock.monotonic()
            next_due = min((s.due for s in schedules), default=now + MAX_SLEEP)
            self.clock.sleep(min(MAX_SLEEP, max(0.0, next_due - now)))

    def _pick_up(self) -> None:
        """Drains and resumes that a previous process of this boot started and did not end."""
        for notice in self.state.unfinished():
            record = self.state.get(notice.event_id) or {}
            log_fields = fields(NOTICE_ID=notice.event_id)
            if record.get("status") == state.RESUMING:
                LOG.warning(
                    "running the resume hooks of %s: a restart came before they were over",
                    notice.event_id,
                    extra=log_fields,
                )
                self._resumes.append((notice, bool(record.get("forget", True))))
                continue
            LOG.warning(
                "resuming the drain of %s interrupted by a restart",
                notice.event_id,
                extra=log_fields,
            )
            self._consider(notice)

    def _max_backoff(self) -> float:
        section = getattr(self.config, self.provider.name, None)
        return float(getattr(section, "max_backoff", 10.0))

    def _step(self, schedules: list[_Schedule]) -> Optional[int]:
        """One turn of the loop; an exit code when the agent is done."""
        if self._stop and self._drain is None:
            LOG.info("stop requested; no drain under way, exiting")
            self.notifier.stopping("stopped")
            return exitcodes.FINISHED
        for schedule in schedules:
            if self.clock.monotonic() >= schedule.due:
                notices = self._poll(schedule)
                for notice in notices:
                    self._consider(notice)
                if schedule.ok:
                    self._track(schedule.watcher.name, notices)
        drain = self._drain
        if drain is not None:
            if drain.thread.is_alive():
                self._report_progress(drain)
                return None
            self._drain = None
            code = self._finished(drain)
            if code is not None:
                return code
        if self._pending is not None and self._drain is None:
            pending, self._pending = self._pending, None
            self._start(pending)
        if self._resumes and self._drain is None and not self._stop:
            # During a stop they wait in the state file (resuming) for the next start.
            self._launch(*self._resumes.pop(0), phase=RESUME)
        if self._drain is None:
            self.notifier.status(f"watching {self.provider.name}")
        return None

    def _poll(self, schedule: _Schedule) -> list[Notice]:
        watcher = schedule.watcher
        try:
            notices = watcher.poll()
        except Exception as exc:
            delay = schedule.backoff.next_delay()
            retry_after = getattr(exc, "retry_after", None)
            if retry_after:
                delay = max(delay, retry_after)
            schedule.due = self.clock.monotonic() + delay
            schedule.failures.failure(
                "%s: %s; retrying in %.1f s", watcher.name, exc, delay, key=_failure_kind(exc)
            )
            schedule.ok = False
            return []
        schedule.ok = True
        schedule.backoff.reset()
        schedule.failures.recovered("%s: metadata answers again", watcher.name)
        schedule.due = self.clock.monotonic() + watcher.interval
        return notices

    # -- drains ------------------------------------------------------------------------------

    def _consider(self, notice: Notice) -> None:
        record = self.state.get(notice.event_id)
        status = record["status"] if record else None
        # A termination drained but not yet confirmed (a restart came between): confirm it.
        reconfirm = status == state.DRAINED and notice.terminal and self.config.confirm
        if status not in (None, state.DRAINING) and not reconfirm:
            if notice.event_id not in self._seen:
                self._seen.add(notice.event_id)
                LOG.info("notice %s was already handled in this boot (%s)", notice.event_id, status)
            return
        drain = self._drain
        if drain is None:
            self._start(notice)
            return
        if drain.notice.event_id == notice.event_id or not notice.terminal:
            return
        if drain.cancel.is_set() or drain.then is not None:
            return  # already making way for a termination
        if drain.phase == RESUME or not drain.notice.terminal:
            LOG.warning(
                "%s arrived during the %s %s; cancelling it to drain for the termination",
                notice.kind,
                drain.notice.kind,
                drain.phase,
                extra=fields(NOTICE_ID=notice.event_id),
            )
            drain.cancel.set()
            self._pending = notice
        elif not reconfirm:
            self._bring_forward(drain, notice)

    def _bring_forward(self, drain: Drain, notice: Notice) -> None:
        """A termination with an earlier deadline than the termination being drained: the
        running drain ends by the new deadline, and the new notice's hooks that have not run
        for the first drain run right after it, before anything is confirmed."""
        _, end = run_window(notice, DRAIN, self.clock, self.config)
        if end >= drain.end:
            return  # the first deadline comes first: its confirmation decides
        LOG.warning(
            "%s %s (deadline %s) arrived during the %s drain of %s: that drain ends by the "
            "earlier deadline, then the hooks for %s that have not run yet run",
            notice.kind,
            notice.event_id,
            notice.deadline.isoformat() if notice.deadline else "none given",
            drain.notice.kind,
            drain.notice.event_id,
            notice.kind,
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind),
        )
        drain.end = end  # the runner reads it again while hooks run
        drain.then = notice
        self._pending = notice
        # Recorded now, so that a restart drains it too and leaves out the first one's hooks.
        self.state.start(notice)
        self.state.set_status(notice.event_id, state.DRAINING, after=drain.notice.event_id)

    def _start(self, notice: Notice) -> None:
        LOG.warning(
            "%s notice %s: action %s, deadline %s; draining",
            notice.kind,
            notice.event_id,
            notice.action,
            notice.deadline.isoformat() if notice.deadline else "none given",
            extra=fields(NOTICE_ID=notice.event_id, PROVIDER=notice.provider, KIND=notice.kind),
        )
        self.state.start(notice)
        self._tracked.setdefault(notice.event_id, _Tracked(notice, None, self.clock.monotonic()))
        self._launch(notice, False, phase=DRAIN)

    def _launch(self, notice: Notice, forget: bool, phase: str) -> None:
        """Start the worker thread for a drain or a resume of ``notice`` (agent.drain)."""
        deadline, end = run_window(notice, phase, self.clock, self.config)
        drain = Drain(notice, phase, end, forget)
        drain.thread = threading.Thread(
            target=self.worker.run,
            args=(drain, deadline),
            name=f"{phase}-{notice.kind}",
            daemon=True,
        )
        self._drain = drain
        drain.thread.start()
        self._report_progress(drain)

    def _report_progress(self, drain: Drain) -> None:
        if drain.stage == CONFIRMING:
            self.notifier.status(f"confirming {drain.notice.action}")
            why = "stop requested" if self._stop else "a termination drains next"
            if (self._stop or drain.then is not None) and not drain.cancel.is_set():
                LOG.info("%s while confirming %s; ending it", why, drain.notice.event_id)
                drain.cancel.set()
            return
        left = max(0.0, drain.end - self.clock.monotonic())
        doing = "resuming" if drain.phase == RESUME else "draining"
        self.notifier.status(
            f"{doing}: {len(drain.results)}/{drain.total} hooks, {left:.0f} s left"
        )
        if self._stop:
            # systemd is stopping us (often: the instance is shutting down); let the hooks finish.
            self.notifier.extend_timeout(left + self.config.kill_grace + 5)

    def _finished(self, drain: Drain) -> Optional[int]:
        """In the main loop, once the worker is done: an exit code, or None to keep watching."""
        notice = drain.notice
        if drain.failed:
            LOG.error(
                "exiting with %d: a restart takes the %s of %s up again",
                exitcodes.FAILURE,
                drain.phase,
                notice.event_id,
                extra=fields(NOTICE_ID=notice.event_id, PHASE=drain.phase, OUTCOME="failed"),
            )
            self.notifier.stopping(f"failed: {drain.phase} of {notice.event_id}")
            return exitcodes.FAILURE
        if drain.phase == RESUME:
            self._resumed(drain)
            return None
        if drain.cancel.is_set() and not drain.drained:
            self.state.set_status(notice.event_id, state.DRAINING)
            LOG.warning("drain of %s cancelled (%s)", notice.event_id, drain.summary())
            return None
        if drain.then is not None:
            LOG.info("drain of %s over; %s drains now", notice.event_id, drain.then.event_id)
            return None
        if not notice.terminal:
            tracked = self._tracked.get(notice.event_id)
            if tracked is not None:
                tracked.since = self.clock.monotonic()
            return None
        return self._outcome(drain)

    def _outcome(self, drain: Drain) -> Optional[int]:
        """What a termination drain and its confirmation come to: an exit code (exitcodes),
        or None to keep watching (withdrawn; or hibernating, which the instance comes back
        from in this boot: its resume hooks run once the notice has left metadata)."""
        settled = self._settle(drain)
        if settled is None:
            return None
        code, what = settled
        notice = drain.notice
        if notice.action == HIBERNATE and not self._stop:
            LOG.warning(
                "%s: the instance hibernates and comes back in this boot; watching on, the "
                "resume hooks run once the notice has left the metadata service",
                notice.event_id,
                extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind),
            )
            return None
        self.notifier.stopping(what)
        return code

    def _settle(self, drain: Drain) -> Optional[tuple[int, str]]:
        """Record the confirmation's verdict: the exit code and final status it means, or
        None (withdrawn: the resume phase is queued)."""
        notice = drain.notice
        log_fields = fields(NOTICE_ID=notice.event_id, KIND=notice.kind)
        found = drain.confirmation
        if not self.config.confirm:
            LOG.info("confirmation is off: the notice alone ends the run", extra=log_fields)
            return exitcodes.FINISHED, f"drained {notice.action}"
        if (
            self._stop
            and drain.cancel.is_set()
            and (found is None or found.verdict is Verdict.UNKNOWN)
        ):
            LOG.warning(
                "stopped while confirming %s; exiting without the API's answer",
                notice.event_id,
                extra=log_fields,
            )
            return exitcodes.FINISHED, "stopped"
        if found is None:
            LOG.warning(
                "%s cannot be confirmed through the %s API; the notice alone ends the run",
                notice.event_id,
                self.provider.name,
                extra=log_fields,
            )
            return exitcodes.FINISHED, f"drained {notice.action}"
        if found.verdict is Verdict.CONFIRMED:
            self.state.set_status(notice.event_id, state.CONFIRMED, confirmation=found.detail)
            LOG.warning(
                "%s confirmed: %s",
                notice.event_id,
                found.detail,
                extra={**log_fields, "OUTCOME": "confirmed"},
            )
            return exitcodes.FINISHED, f"confirmed {notice.action}"
        if found.verdict is Verdict.WITHDRAWN:
            LOG.warning(
                "%s withdrawn: the notice left metadata and %s; running the resume hooks",
                notice.event_id,
                found.detail,
                extra={**log_fields, "OUTCOME": "withdrawn"},
            )
            self._withdraw(notice, found.detail, forget=True)
            return None
        self.state.set_status(notice.event_id, state.NOT_CONFIRMED, confirmation=found.detail)
        LOG.error(
            "%s not confirmed by the %s API: %s",
            notice.event_id,
            self.provider.name,
            found.detail,
            extra={**log_fields, "OUTCOME": "not-confirmed"},
        )
        return exitcodes.NOT_CONFIRMED, f"not confirmed {notice.action}"

    # -- withdrawn notices -------------------------------------------------------------------

    def _track(self, watcher: str, notices: list[Notice]) -> None:
        """After a poll that answered: note which notices are there and which have gone."""
        now = self.clock.monotonic()
        present = {n.event_id for n in notices}
        drain = self._drain
        for notice in notices:
            tracked = self._tracked.get(notice.event_id)
            if tracked is None:
                tracked = self._tracked[notice.event_id] = _Tracked(notice, watcher, now)
            tracked.watcher = watcher
            tracked.misses.clear()
            if drain is not None and drain.notice.event_id == notice.event_id:
                drain.gone.clear()
            self._maybe_expire(tracked, now)
        for event_id, tracked in list(self._tracked.items()):
            if event_id in present or tracked.watcher not in (None, watcher):
                continue
            tracked.misses[watcher] = tracked.misses.get(watcher, 0) + 1
            if tracked.watcher is not None:
                gone = tracked.misses[watcher] >= GONE_POLLS
            else:
                names = self._watcher_names
                gone = all(tracked.misses.get(name, 0) >= GONE_POLLS for name in names)
            if gone:
                self._gone(event_id, tracked)

    def _busy(self) -> bool:
        return self._drain is not None or self._pending is not None

    def _gone(self, event_id: str, tracked: _Tracked) -> None:
        drain = self._drain
        if drain is not None and drain.notice.event_id == event_id:
            drain.gone.set()  # a confirmation decides; an advisory drain ends first
            return
        if any(n.event_id == event_id for n, _ in self._resumes):
            return
        notice = tracked.notice
        record = self.state.get(event_id)
        status = record["status"] if record else None
        back = notice.terminal and notice.action == HIBERNATE and status in SETTLED
        if back or (status == state.DRAINED and not notice.terminal):
            if self._busy():
                return  # once the current drain is over; the notice stays gone
            why = "back from hibernation" if back else "withdrawn"
            LOG.warning(
                "%s notice %s has left the metadata service: %s; running the resume hooks",
                notice.kind,
                event_id,
                why,
                extra=fields(
                    NOTICE_ID=event_id, KIND=notice.kind, OUTCOME="resumed" if back else why
                ),
            )
            self._withdraw(notice, f"the notice left the metadata service: {why}", forget=True)
        elif status == state.WITHDRAWN:
            self._forget(event_id)
            LOG.info("withdrawn notice %s has left the metadata service; forgotten", event_id)
        elif status in (state.DRAINING, state.RESUMING, *SETTLED):
            return  # waiting for a drain, or a termination whose confirmation will decide
        self._tracked.pop(event_id, None)

    def _maybe_expire(self, tracked: _Tracked, now: float) -> None:
        """A rebalance recommendation that stays without becoming a termination is withdrawn.

        It remains in metadata, so its record is kept (as withdrawn) until it goes away:
        otherwise the next poll would drain it again.
        """
        notice = tracked.notice
        after = self.config.rebalance_resume_after
        if notice.kind != REBALANCE_RECOMMENDATION or after <= 0 or self._busy():
            return
        if now - tracked.since < after:
            return
        record = self.state.get(notice.event_id)
        if record is None or record["status"] != state.DRAINED:
            return
        LOG.warning(
            "rebalance recommendation %s has not become a termination in %.0f s: withdrawn; "
            "running the resume hooks",
            notice.event_id,
            now - tracked.since,
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind, OUTCOME="withdrawn"),
        )
        self._withdraw(notice, f"no termination within {after:.0f} s", forget=False)

    def _withdraw(self, notice: Notice, why: str, forget: bool) -> None:
        """Queue the resume phase of ``notice`` (run when no drain is). The record says
        ``resuming`` until it is over, so that a restart runs what is left of it."""
        self.state.set_status(notice.event_id, state.RESUMING, withdrawn=why, forget=forget)
        self._resumes.append((notice, forget))
        if forget:
            self._tracked.pop(notice.event_id, None)

    def _resumed(self, drain: Drain) -> None:
        notice = drain.notice
        if drain.cancel.is_set():
            # Cut short by a termination: what did not finish runs again, first, after it.
            LOG.warning("resume of %s cancelled (%s)", notice.event_id, drain.summary())
            self._resumes.insert(0, (notice, drain.forget))
            return
        # State first, then the log line that announces it.
        if drain.forget:
            self._forget(notice.event_id)
        else:
            self.state.set_status(notice.event_id, state.WITHDRAWN)
        LOG.info(
            "resume of %s finished: %s%s",
            notice.event_id,
            drain.summary(),
            "; watching again" if drain.forget else "",
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind, OUTCOME="resumed"),
        )

    def _forget(self, event_id: str) -> None:
        """Drop a withdrawn notice's record, so the next notice like it drains afresh."""
        self.state.forget(event_id)
        self._seen.discard(event_id)
        self._tracked.pop(event_id, None)
