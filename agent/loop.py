"""The daemon: a coordinator. It knows no cloud and decides nothing itself.

Watchers poll in their own threads (:mod:`agent.scheduler`); their answers, finished runs and
signals arrive in one inbox, and the loop sleeps until one does. For each it asks
:mod:`agent.decisions` what to do, moves the notice along :mod:`agent.lifecycle`, and keeps
one queue of runs (drains and resumes), one running at a time in a worker thread
(:mod:`agent.runs`). The watchdog is pinged from here, also while hooks run.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, Optional

from agent import decisions as d
from agent import exitcodes
from agent import lifecycle as lc
from agent.actions import build as build_actions
from agent.clock import Clock
from agent.clouds.base import Cloud
from agent.config import Config
from agent.confirmation import confirm_with
from agent.hooks import DRAIN, RESUME
from agent.hooks.runner import kill_leftover
from agent.logs import fields
from agent.notice import Notice
from agent.presence import Presence
from agent.report import Reporter, tell_identity
from agent.runqueue import RunQueue
from agent.runs import Confirmer, HookSource, Worker, discover_hooks, run_window
from agent.scheduler import Inbox, Polled, Scheduler
from agent.shutdown import shutdown_notice
from agent.systemd import Notifier

LOG = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
"""Fatal by default, yet no reason to die mid-drain: logged and carried on."""
PROGRESS_EVERY = 1.0


class Daemon:
    def __init__(
        self,
        config: Config,
        cloud: Cloud,
        clock: Clock,
        notifier: Notifier,
        lifecycle: lc.Lifecycle,
        *,
        hooks: Optional[HookSource] = None,
        confirmer: Optional[Confirmer] = None,
        report: Optional[Reporter] = None,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        self.cloud = cloud
        self.section = config.sections.get(cloud.name)  # every registered cloud has one
        self.clock = clock
        self.notifier = notifier
        self.lifecycle = lifecycle
        self.report = report or Reporter()
        self.inbox = Inbox()
        self.presence = Presence()
        worker = Worker(
            config,
            clock,
            lifecycle,
            hooks or (lambda: discover_hooks(config)),
            confirmer or self._confirm,
            dry_run=dry_run,
            report=self.report,
            status=self._status,
            actions=build_actions(config, cloud),
            after_drain=lambda notice: cloud.after_drain(notice, self.section, clock),
        )
        self.runs = RunQueue(
            config, clock, lifecycle, self.presence, worker, notifier, self.report, self.inbox.wake
        )
        self.stopping = False
        self._asked_at_stop = False
        self._signals: list[int] = []
        self._seen: set[str] = set()

    # -- signals ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """From the main thread: handlers only note the signal; the wakeup fd ends the wait."""
        for signum in (*STOP_SIGNALS, *IGNORED_SIGNALS):
            signal.signal(signum, self._on_signal)
        signal.set_wakeup_fd(self.inbox.wakeup_fd, warn_on_full_buffer=False)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only a note: no lock may be taken here (the interrupted thread may hold it).
        self._signals.append(signum)

    def request_stop(self) -> None:
        """What SIGTERM does, callable from any thread."""
        self._signals.append(signal.SIGTERM)
        self.inbox.wake()

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        try:
            # Now, not when first needed: a package upgrade replaces the agent's files under
            # the running daemon, and a later import could fail or mix two versions.
            self.cloud.preload()
        except Exception:
            LOG.exception("cannot load the %s API module; confirmation will fail", self.cloud.name)
        watchers = self.cloud.watchers(self.section, self.clock)
        scheduler = Scheduler(watchers, self.inbox, self.clock.monotonic, self.report.polled)
        self.presence.watchers = scheduler.names
        self.lifecycle.load()
        watching = scheduler.describe() or "no watcher enabled"
        self.notifier.ready(f"watching {self.cloud.name}: {watching}")
        self.report.status(f"watching {self.cloud.name}: {watching}")
        LOG.info("watching %s: %s", self.cloud.name, watching)
        tell_identity(self.cloud, self.section, self.clock, self.report)  # in the background
        self._pick_up()
        scheduler.start()
        try:
            return self._loop()
        finally:
            scheduler.stop()

    def _loop(self) -> int:
        while True:
            for item in self.inbox.wait(self._sleep_for()):
                if isinstance(item, Polled):
                    self._polled(item)
            self._take_signals()
            code = self._step()
            if code is not None:
                return code
            self.notifier.ping()

    def _sleep_for(self) -> Optional[float]:
        """Until something is due: the run's progress line, or the next watchdog ping."""
        waits = [PROGRESS_EVERY] if self.runs.current is not None else []
        if self.notifier.watchdog_interval:
            waits.append(self.notifier.watchdog_interval / 4)
        return min(waits, default=None)

    def _take_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum in STOP_SIGNALS:
                self.stopping = True
            else:
                LOG.warning("%s received: ignored (no reload needed)", signal.Signals(signum).name)

    def _step(self) -> Optional[int]:
        run = self.runs.finished()
        if run is not None:
            if run.phase == RESUME and not run.cancel.is_set():
                self._seen.discard(run.notice.event_id)
            code = self.runs.settle(run, self.stopping)
            if code is not None:
                return code
            for tracked in self.presence.all_gone():  # decisions the run held up
                self._gone(tracked.notice)
        self.runs.next(self.stopping)
        if self.runs.current is not None:
            self._status(self.runs.progress(self.stopping))
            return None
        if self.stopping and self._drain_on_shutdown():
            return None
        if self.stopping:
            LOG.info("stop requested; no drain under way, exiting")
            self.notifier.stopping("stopped")
            self.report.status("stopped")
            return exitcodes.FINISHED
        self._status(f"watching {self.cloud.name}")
        return None

    def _drain_on_shutdown(self) -> bool:
        """Once per stop with nothing running: drain now if this stop is an interruption
        (:mod:`agent.shutdown`). True when a drain started."""
        if self._asked_at_stop:
            return False
        self._asked_at_stop = True
        notice = shutdown_notice(self.cloud, self.section, self.config, self.clock, self.lifecycle)
        if notice is None:
            return False
        if not d.owed(self.lifecycle.status(notice.event_id), notice, self.config.confirm):
            return False
        self.runs.drain_now(notice)
        self._status(self.runs.progress(self.stopping))
        return True

    def _status(self, text: str) -> None:
        self.notifier.status(text)
        self.report.status(text)

    def _confirm(self, notice: Notice, budget_end: float, gone: Any, cancel: Any) -> Any:
        return confirm_with(
            self.cloud, notice, self.section, self.clock, budget_end, gone=gone, cancel=cancel
        )

    # -- notices ------------------------------------------------------------------------------

    def _polled(self, polled: Polled) -> None:
        if not polled.ok:
            return
        for notice in polled.notices:
            self._consider(notice)
        now = self.clock.monotonic()
        for tracked in self.presence.observe(polled.watcher, list(polled.notices), now):
            self._gone(tracked.notice)
        after = self.config.rebalance_resume_after
        for notice in polled.notices:
            age = self.presence.age(notice.event_id, now)
            status = self.lifecycle.status(notice.event_id)
            if d.expired(status, notice, age, after, self.runs.busy()):
                why = f"it has not become a termination in {age:.0f} s"
                self.runs.withdraw(notice, why, forget=False, outcome="withdrawn")

    def _consider(self, notice: Notice) -> None:
        event_id = notice.event_id
        running = self.runs.view()
        end = run_window(notice, DRAIN, self.clock, self.config)[1] if running else 0.0
        status = self.lifecycle.status(event_id)
        queued = self.runs.queued(event_id, DRAIN)
        what = d.on_notice(status, notice, running, queued, self.config.confirm, end)
        if what == d.KNOWN and event_id not in self._seen:
            self._seen.add(event_id)
            LOG.info("notice %s was already handled in this boot (%s)", event_id, status)
        elif what == d.START:
            self.runs.drain_now(notice)
        elif what == d.CANCEL_FOR:
            self.runs.cancel_for(notice)
        elif what == d.BRING_FORWARD:
            self.runs.bring_forward(notice, end)

    def _gone(self, notice: Notice) -> None:
        event_id = notice.event_id
        if self.runs.running(event_id):
            return  # its confirmation asks the presence tracker; an advisory drain ends first
        status = self.lifecycle.status(event_id)
        what, why = d.on_gone(status, notice, self.runs.busy(), self.runs.queued(event_id))
        if what == d.WITHDRAW:
            outcome = "resumed" if why == d.BACK else why
            why = f"it has left the metadata service: {why}"
            self.runs.withdraw(notice, why, forget=True, outcome=outcome)
        elif what == d.FORGET:
            self.runs.forget(event_id)
            self._seen.discard(event_id)
            LOG.info("withdrawn notice %s has left the metadata service; forgotten", event_id)
        elif what == d.UNTRACK:
            self.presence.drop(event_id)

    def _pick_up(self) -> None:
        """Drains and resumes that an earlier process of this boot started and did not end,
        and terminations drained but not confirmed. Each is tracked from now, reported or
        not, so that its leaving metadata is seen (watchers soon stop posting empty answers)
        and its record ends."""
        now = self.clock.monotonic()
        left = self.lifecycle.unfinished(reconfirm=self.config.confirm)
        for notice, _ in left:
            self.presence.track(notice, now)
        for notice, record in left:
            self._take_up(notice, record)

    def _take_up(self, notice: Notice, record: dict[str, Any]) -> None:
        event_id = notice.event_id
        left = record.get("running") or {}
        if isinstance(left.get("pgid"), int) and kill_leftover(left["pgid"], event_id):
            LOG.warning("ended what was left of hook %s from before the restart", left["hook"])
        if record["status"] == lc.RESUMING:
            LOG.warning(
                "running the resume hooks of %s: a restart came before they were over",
                event_id,
                extra=fields(NOTICE_ID=event_id),
            )
            self.runs.resume_later(notice, bool(record.get("forget", True)))
            return
        if record["status"] == lc.DRAINED:
            why = "confirming %s: a restart came after its drain, before its confirmation"
        else:
            why = "resuming the drain of %s interrupted by a restart"
        LOG.warning(why, event_id, extra=fields(NOTICE_ID=event_id))
        self._consider(notice)
        if not self.runs.running(event_id) and not self.runs.queued(event_id):
            self.runs.drain_later(notice)  # another drain runs first: this one after it
