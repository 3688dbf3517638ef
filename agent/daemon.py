"""The loop: watch metadata, drain on a notice, confirm, exit. It knows no cloud.

Watchers are polled on their own schedules from the main thread; a drain runs in a worker
thread, so polling (and the systemd watchdog) go on while hooks run, and a termination that
arrives during an advisory drain (say, a rebalance recommendation) cancels it and starts
at once.
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
from agent.hooks import DRAIN, Hook, Refused
from agent.hooks.runner import HookResult, HookRunner, hook_deadline
from agent.logs import fields
from agent.notice import Notice
from agent.providers.base import Provider, Verdict, Watcher
from agent.retry import Backoff, RateLimitedLog
from agent.systemd import Notifier

LOG = logging.getLogger(__name__)

HookSource = Callable[[], "tuple[list[Hook], list[Refused]]"]
FAILURE_LOG_EVERY = 60.0
MAX_SLEEP = 1.0


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


@dataclass
class _Drain:
    notice: Notice
    phase: str
    thread: threading.Thread
    cancel: threading.Event = field(default_factory=threading.Event)
    results: list[HookResult] = field(default_factory=list)
    total: int = 0
    end: float = 0.0


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
                for notice in self._poll(schedule):
                    self._consider(notice)
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
            return []
        schedule.backoff.reset()
        schedule.failures.recovered("%s: metadata answers again", watcher.name)
        schedule.due = self.clock.monotonic() + watcher.interval
        return notices

    # -- drains ------------------------------------------------------------------------------

    def _consider(self, notice: Notice) -> None:
        record = self.state.get(notice.event_id)
        if record is not None and record["status"] != state.DRAINING:
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
        finally:
            self.clock.wake()  # the main loop handles the end of the drain at once

    def _report_progress(self, drain: _Drain) -> None:
        left = max(0.0, drain.end - self.clock.monotonic())
        self.notifier.status(
            f"draining: {len(drain.results)}/{drain.total} hooks, {left:.0f} s left"
        )
        if self._stop:
            # systemd is stopping us (often: the instance is shutting down); let the hooks finish.
            self.notifier.extend_timeout(left + self.config.kill_grace + 5)

    def _finished(self, drain: _Drain) -> Optional[int]:
        notice = drain.notice
        counts: dict[str, int] = {}
        for result in drain.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no hooks"
        if drain.cancel.is_set():
            LOG.warning("drain of %s cancelled (%s)", notice.event_id, summary)
            self.state.set_status(notice.event_id, state.DRAINING)
            return None
        self.state.set_status(notice.event_id, state.DRAINED)
        LOG.info(
            "drain of %s finished: %s",
            notice.event_id,
            summary,
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind, OUTCOME="drained"),
        )
        if not notice.terminal:
            return None
        return self._confirm(notice)

    def _confirm(self, notice: Notice) -> int:
        """After a termination drain: ask the cloud API, then exit (see exitcodes)."""
        confirmation = self.provider.confirm(
            notice, self.config, self.clock, self.clock.monotonic()
        )
        if confirmation is None or confirmation.verdict is Verdict.CONFIRMED:
            self.notifier.stopping(f"drained {notice.action}")
            return exitcodes.FINISHED
        return exitcodes.NOT_CONFIRMED
