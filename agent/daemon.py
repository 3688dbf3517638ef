"""The loop: watch metadata, drain on a notice, confirm, exit. It knows no cloud.

Watchers are polled on their own schedules from the main thread; a drain runs in a worker
thread, so polling (and the systemd watchdog) go on while hooks run, and a termination that
arrives during an advisory drain (say, a rebalance recommendation) cancels it and starts
at once. After a termination drain the same worker confirms through the cloud API, for
minutes if need be, while the loop keeps polling: a notice that leaves the metadata service
while the API shows the instance unaffected is withdrawn, and the resume hooks run
(docs/confirmation.md).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

from agent import exitcodes, state
from agent.clock import Clock
from agent.config import Config
from agent.hooks import DRAIN, RESUME, Hook, Refused
from agent.hooks.runner import HookResult, HookRunner, hook_deadline
from agent.logs import fields
from agent.notice import REBALANCE_RECOMMENDATION, Notice
from agent.providers.base import Confirmation, Provider, Verdict, Watcher
from agent.retry import Backoff, RateLimitedLog
from agent.systemd import Notifier

LOG = logging.getLogger(__name__)

HookSource = Callable[[], "tuple[list[Hook], list[Refused]]"]
FAILURE_LOG_EVERY = 60.0
MAX_SLEEP = 1.0
GONE_POLLS = 2
"""Successful polls in a row without a notice before it counts as gone from metadata."""
HOOKS, CONFIRMING = "hooks", "confirming"


def discover_hooks(config: Config) -> tuple[list[Hook], list[Refused]]:
    """Scripts from hooks_dir, then plugins; read afresh for every drain."""
    from agent.hooks import plugins, scripts

    hooks, refused = scripts.discover(config.hooks_dir)
    if config.plugins:
        more, more_refused = plugins.discover()
        hooks += more
        refused += more_refused
    return hooks, refused


@dataclass
class _Schedule:
    watcher: Watcher
    backoff: Backoff
    failures: RateLimitedLog
    due: float = 0.0
    ok: bool = False  # the last poll answered


@dataclass
class _Drain:
    notice: Notice
    phase: str
    thread: threading.Thread
    cancel: threading.Event = field(default_factory=threading.Event)
    results: list[HookResult] = field(default_factory=list)
    total: int = 0
    end: float = 0.0
    stage: str = HOOKS
    drained: bool = False  # the hooks ran to the end (set by the worker)
    gone: threading.Event = field(default_factory=threading.Event)  # left metadata
    confirmation: Optional[Confirmation] = None
    forget: bool = False  # resume phase: drop the record afterwards


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
        self.hook_source = hook_source or (lambda: discover_hooks(config))
        self.runner = HookRunner(clock, config.kill_grace, config.hook_timeout)
        self._drain: Optional[_Drain] = None
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
        self._stop = True
        self.clock.wake()

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
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
        for notice in self.state.unfinished():
            LOG.warning(
                "resuming the drain of %s interrupted by a restart",
                notice.event_id,
                extra=fields(NOTICE_ID=notice.event_id),
            )
            self._consider(notice)
        while True:
            code = self._step(schedules)
            if code is not None:
                return code
            self.notifier.ping()
            now = self.clock.monotonic()
            next_due = min((s.due for s in schedules), default=now + MAX_SLEEP)
            self.clock.sleep(min(MAX_SLEEP, max(0.0, next_due - now)))

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
        if self._resumes and self._drain is None:
            self._start_resume(*self._resumes.pop(0))
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
        # A termination drained but not yet confirmed (a restart came between): confirm it.
        reconfirm = record is not None and record["status"] == state.DRAINED
        reconfirm = reconfirm and notice.terminal and self.config.confirm
        if record is not None and record["status"] != state.DRAINING and not reconfirm:
            if notice.event_id not in self._seen:
                self._seen.add(notice.event_id)
                LOG.info(
                    "notice %s was already handled in this boot (%s)",
                    notice.event_id,
                    record["status"],
                )
            return
        drain = self._drain
        if drain is not None:
            if drain.notice.event_id == notice.event_id:
                return
            if notice.terminal and not drain.notice.terminal and not drain.cancel.is_set():
                LOG.warning(
                    "%s arrived during the %s drain; cancelling it to drain for the termination",
                    notice.kind,
                    drain.notice.kind,
                    extra=fields(NOTICE_ID=notice.event_id),
                )
                drain.cancel.set()
                self._pending = notice
            return
        self._start(notice)

    def _start(self, notice: Notice, phase: str = DRAIN) -> None:
        now = self.clock.now()
        deadline = hook_deadline(notice, now, self.config.max_run_time)
        bound = now + timedelta(seconds=self.config.max_run_time)
        end = self.clock.monotonic_at(min(deadline, bound)) - self.config.safety_margin
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
        drain = _Drain(notice, phase, threading.Thread(target=lambda: None), end=end)
        drain.thread = threading.Thread(
            target=self._run_drain, args=(drain, deadline), name=f"drain-{notice.kind}", daemon=True
        )
        self._drain = drain
        drain.thread.start()
        self._report_progress(drain)

    def _run_drain(self, drain: _Drain, deadline: datetime) -> None:
        notice = drain.notice
        try:
            hooks, refused = self.hook_source()
        except Exception:
            LOG.exception("cannot list hooks")
            hooks, refused = [], []
        for bad in refused:
            LOG.error(
                "refusing hook %s: %s",
                bad.name,
                bad.reason,
                extra=fields(HOOK=bad.name, OUTCOME="refused"),
            )
        done = self.state.finished_hooks(notice.event_id, drain.phase)
        if done:
            LOG.info(
                "hooks already finished before a restart, not run again: %s",
                ", ".join(sorted(done)),
            )
        todo = [h for h in hooks if h.handles(notice.kind, drain.phase) and h.name not in done]
        if drain.phase == RESUME:
            todo.reverse()  # undo in the opposite order of the drain
        drain.total = len(todo)
        if not todo:
            LOG.info("no hook handles %s (%s)", notice.kind, drain.phase)

        def record(hook: Hook, result: HookResult) -> None:
            drain.results.append(result)
            if result.outcome != "skipped" or not drain.cancel.is_set():
                self.state.hook_result(notice.event_id, drain.phase, hook.name, result.to_dict())

        try:
            self.runner.run(
                todo,
                notice,
                drain.phase,
                drain.end,
                deadline,
                cancel=drain.cancel,
                on_result=record,
            )
            if drain.phase == DRAIN and not drain.cancel.is_set():
                self._drained(drain)
                if notice.terminal and self.config.confirm:
                    self._confirm(drain, deadline)
        finally:
            self.clock.wake()  # the main loop handles the end of the drain at once

    def _report_progress(self, drain: _Drain) -> None:
        if drain.phase == RESUME:
            self.notifier.status(f"resuming: {len(drain.results)}/{drain.total} hooks")
            return
        if drain.stage == CONFIRMING:
            self.notifier.status(f"confirming {drain.notice.action}")
            if self._stop and not drain.cancel.is_set():
                LOG.info("stop requested while confirming %s; ending it", drain.notice.event_id)
                drain.cancel.set()
            return
        left = max(0.0, drain.end - self.clock.monotonic())
        self.notifier.status(
            f"draining: {len(drain.results)}/{drain.total} hooks, {left:.0f} s left"
        )
        if self._stop:
            # systemd is stopping us (often: the instance is shutting down); let the hooks finish.
            self.notifier.extend_timeout(left + self.config.kill_grace + 5)

    @staticmethod
    def _summary(drain: _Drain) -> str:
        counts: dict[str, int] = {}
        for result in drain.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no hooks"

    def _drained(self, drain: _Drain) -> None:
        """In the worker, once the hooks ran to the end: record it before any confirmation."""
        notice = drain.notice
        drain.drained = True
        self.state.set_status(notice.event_id, state.DRAINED)
        LOG.info(
            "drain of %s finished: %s",
            notice.event_id,
            self._summary(drain),
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind, OUTCOME="drained"),
        )

    def _confirm(self, drain: _Drain, deadline: datetime) -> None:
        """In the worker, after a termination drain: ask the cloud API within the budget.

        The budget runs to the notice's deadline plus ``confirm_grace``; the main loop keeps
        polling meanwhile and sets ``drain.gone`` when the notice leaves metadata.
        """
        notice = drain.notice
        drain.stage = CONFIRMING
        self.notifier.status(f"confirming {notice.action}")
        if self._stop:
            drain.cancel.set()
        budget_end = self.clock.monotonic_at(deadline) + self.config.confirm_grace
        LOG.info(
            "confirming %s %s through the %s API (for up to %.0f s)",
            notice.kind,
            notice.event_id,
            self.provider.name,
            max(0.0, budget_end - self.clock.monotonic()),
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind),
        )
        try:
            drain.confirmation = self.provider.confirm(
                notice,
                self.config,
                self.clock,
                budget_end,
                gone=drain.gone.is_set,
                cancel=drain.cancel,
            )
        except Exception as exc:
            LOG.exception("confirming %s failed", notice.event_id)
            drain.confirmation = Confirmation(Verdict.UNKNOWN, f"{type(exc).__name__}: {exc}")

    def _finished(self, drain: _Drain) -> Optional[int]:
        """In the main loop, once the worker is done: an exit code, or None to keep watching."""
        notice = drain.notice
        if drain.phase == RESUME:
            self._resumed(drain)
            return None
        if drain.cancel.is_set() and not drain.drained:
            LOG.warning("drain of %s cancelled (%s)", notice.event_id, self._summary(drain))
            self.state.set_status(notice.event_id, state.DRAINING)
            return None
        if not notice.terminal:
            tracked = self._tracked.get(notice.event_id)
            if tracked is not None:
                tracked.since = self.clock.monotonic()
            return None
        return self._outcome(drain)

    def _outcome(self, drain: _Drain) -> Optional[int]:
        """What a termination drain and its confirmation come to (exit codes: exitcodes)."""
        notice = drain.notice
        log_fields = fields(NOTICE_ID=notice.event_id, KIND=notice.kind)
        found = drain.confirmation
        if not self.config.confirm:
            LOG.info("confirmation is off: the notice alone ends the run", extra=log_fields)
            self.notifier.stopping(f"drained {notice.action}")
            return exitcodes.FINISHED
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
            self.notifier.stopping("stopped")
            return exitcodes.FINISHED
        if found is None:
            LOG.warning(
                "%s cannot be confirmed through the %s API; the notice alone ends the run",
                notice.event_id,
                self.provider.name,
                extra=log_fields,
            )
            self.notifier.stopping(f"drained {notice.action}")
            return exitcodes.FINISHED
        if found.verdict is Verdict.CONFIRMED:
            self.state.set_status(notice.event_id, state.CONFIRMED, confirmation=found.detail)
            LOG.warning(
                "%s confirmed: %s",
                notice.event_id,
                found.detail,
                extra={**log_fields, "OUTCOME": "confirmed"},
            )
            self.notifier.stopping(f"confirmed {notice.action}")
            return exitcodes.FINISHED
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
        self.notifier.stopping(f"not confirmed {notice.action}")
        return exitcodes.NOT_CONFIRMED

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
        record = self.state.get(event_id)
        status = record["status"] if record else None
        if status == state.DRAINED and not tracked.notice.terminal:
            if self._busy():
                return  # once the current drain is over; the notice stays gone
            LOG.warning(
                "%s notice %s has left the metadata service: withdrawn; running the resume hooks",
                tracked.notice.kind,
                event_id,
                extra=fields(NOTICE_ID=event_id, KIND=tracked.notice.kind, OUTCOME="withdrawn"),
            )
            self._withdraw(tracked.notice, "the notice left the metadata service", forget=True)
        elif status == state.WITHDRAWN:
            LOG.info("withdrawn notice %s has left the metadata service; forgetting it", event_id)
            self._forget(event_id)
        elif status in (state.DRAINING, state.DRAINED):
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
        """Mark ``notice`` withdrawn and queue its resume phase (run when no drain is)."""
        self.state.set_status(notice.event_id, state.WITHDRAWN, withdrawn=why)
        self._resumes.append((notice, forget))
        if forget:
            self._tracked.pop(notice.event_id, None)

    def _start_resume(self, notice: Notice, forget: bool) -> None:
        """Run the resume side of the hooks, bounded by max_run_time (the notice's deadline
        no longer matters)."""
        deadline = self.clock.now() + timedelta(seconds=self.config.max_run_time)
        end = self.clock.monotonic() + self.config.max_run_time
        drain = _Drain(notice, RESUME, threading.Thread(target=lambda: None), end=end)
        drain.forget = forget
        drain.thread = threading.Thread(
            target=self._run_drain,
            args=(drain, deadline),
            name=f"resume-{notice.kind}",
            daemon=True,
        )
        self._drain = drain
        drain.thread.start()
        self._report_progress(drain)

    def _resumed(self, drain: _Drain) -> None:
        notice = drain.notice
        LOG.info(
            "resume of %s finished: %s%s",
            notice.event_id,
            self._summary(drain),
            "; watching again" if drain.forget else "",
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind, OUTCOME="resumed"),
        )
        if drain.forget:
            self._forget(notice.event_id)

    def _forget(self, event_id: str) -> None:
        """Drop a withdrawn notice's record, so the next notice like it drains afresh."""
        self.state.forget(event_id)
        self._seen.discard(event_id)
        self._tracked.pop(event_id, None)
