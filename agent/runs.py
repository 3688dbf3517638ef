"""One run in a worker thread: a drain (steps, then a termination's confirmation) or a resume.

Which hooks run, in what order and until when is decided here, for the daemon and for
``preempt-agent simulate`` alike. The loop talks to a running :class:`Run` only through its
fields: it may bring ``end`` forward (the runner reads it again while hooks run) or set
``cancel``; the run tells the loop it is over through the inbox.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Optional

from agent import lifecycle as lc
from agent.actions import BEFORE, Action, ActionContext
from agent.clock import Clock
from agent.config import Config
from agent.confirmation import Confirmation, Verdict
from agent.hooks import DRAIN, RESUME, Hook, Refused, plugins, scripts
from agent.hooks.runner import ERROR, SKIPPED, TIMEOUT, HookResult, HookRunner
from agent.logs import fields
from agent.notice import Notice
from agent.report import Reporter

LOG = logging.getLogger(__name__)

HookSource = Callable[[], "tuple[list[Hook], list[Refused]]"]
Confirmer = Callable[[Notice, float, Callable[[], bool], threading.Event], Optional[Confirmation]]
HOOKS, CONFIRMING = "hooks", "confirming"
PAST_DEADLINE_WINDOW = 30.0
"""Hooks' window when a notice's deadline is already past (a clock running ahead): the
instance is still here, so the hooks run rather than being skipped."""
MARGIN_SHARE = 0.25
"""The safety margin takes at most this share of a short window."""


def discover_hooks(config: Config) -> tuple[list[Hook], list[Refused]]:
    """Scripts from hooks_dir, then plugins; read afresh for every run.

    A source that cannot be listed at all is refused as a whole, with its traceback in the
    log, and the other one still runs: a broken plugin must not cost the drain its scripts.
    """
    sources: list[tuple[str, HookSource]] = [
        (str(config.hooks_dir), lambda: scripts.discover(config.hooks_dir))
    ]
    if config.plugins:
        sources.append(("plugins", plugins.discover))
    hooks: list[Hook] = []
    refused: list[Refused] = []
    for name, discover in sources:
        try:
            found, bad = discover()
        except Exception as exc:
            LOG.exception("cannot list the hooks of %s", name)
            found, bad = [], [Refused(name, f"cannot list hooks: {type(exc).__name__}: {exc}")]
        hooks += found
        refused += bad
    return hooks, refused


def select_hooks(
    hooks: Iterable[Hook], kind: str, phase: str, done: Collection[str] = ()
) -> list[Hook]:
    """The hooks a run calls, in calling order; ``done`` ones finished before and are left out.

    A resume undoes a drain, so it goes in the opposite order (what stopped last starts first).
    """
    todo = [h for h in hooks if h.handles(kind, phase) and h.name not in done]
    return todo[::-1] if phase == RESUME else todo


def run_window(notice: Notice, phase: str, clock: Clock, config: Config) -> tuple[datetime, float]:
    """The deadline hooks are told, and the monotonic time by which the run must be over.

    A drain ends ``safety_margin`` before the notice's deadline (at most a quarter of a short
    window: the margin never costs hooks their turn), and within ``max_run_time``; a deadline
    already past gives ``PAST_DEADLINE_WINDOW``. A resume gets ``max_run_time``.
    """
    now = clock.now()
    bound = now + timedelta(seconds=config.max_run_time)
    if phase == RESUME:
        return bound, clock.monotonic_at(bound)
    deadline = notice.deadline or bound
    if deadline <= now:
        LOG.warning(
            "the deadline of %s is already past (is the clock ahead?); hooks get %.0f s",
            notice.event_id,
            PAST_DEADLINE_WINDOW,
        )
        deadline = now + timedelta(seconds=PAST_DEADLINE_WINDOW)
    window = (min(deadline, bound) - now).total_seconds()
    margin = min(config.safety_margin, window * MARGIN_SHARE)
    return deadline, clock.monotonic() + window - margin


def confirmation_end(deadline: datetime, clock: Clock, config: Config) -> float:
    """The confirmation budget's monotonic end: the deadline (at most ``max_run_time`` away)
    plus ``confirm_grace``. A notice dated years ahead cannot mean years of API calls."""
    bound = clock.now() + timedelta(seconds=config.max_run_time)
    return clock.monotonic_at(min(deadline, bound)) + config.confirm_grace


@dataclass
class Run:
    """A run and what came of it, shared by its worker thread and the loop."""

    notice: Notice
    phase: str
    deadline: datetime
    end: float  # monotonic; the loop brings it forward for an earlier termination
    forget: bool = False  # resume phase: drop the record afterwards
    cancel: threading.Event = field(default_factory=threading.Event)
    results: list[HookResult] = field(default_factory=list)
    total: int = 0
    stage: str = HOOKS
    drained: bool = False  # the steps ran to the end
    failed: bool = False  # the worker raised
    confirmation: Optional[Confirmation] = None
    followed_by: Optional[Notice] = None  # an earlier termination, drained right after
    done: threading.Event = field(default_factory=threading.Event)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no hooks"


class Worker:
    """Runs a :class:`Run`: its hooks (and built-in actions) under the deadline, recording each
    result through the lifecycle, then a termination's confirmation."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        lifecycle: lc.Lifecycle,
        hooks: HookSource,
        confirmer: Confirmer,
        *,
        dry_run: bool = False,
        report: Optional[Reporter] = None,
        status: Callable[[str], None] = lambda text: None,
        actions: Sequence[Action] = (),
        after_drain: Callable[[Notice], object] = lambda notice: None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.lifecycle = lifecycle
        self.hooks = hooks
        self.confirmer = confirmer
        self.dry_run = dry_run
        self.report = report or Reporter()
        self.status = status
        self.actions = list(actions)  # kept for the process: a resume undoes what they did
        self.after_drain = after_drain
        self.runner = HookRunner(clock, config.kill_grace, config.hook_timeout)

    def run(self, run: Run, gone: Callable[[], bool], changed: Callable[[], None]) -> None:
        """The thread's target; ``changed`` tells the loop to look (a step over, the end).

        Whatever it raises marks the run failed: the loop then exits 1, systemd restarts the
        agent, and the restart picks the run up from the state file."""
        try:
            self.steps(run, changed)
            if run.phase == DRAIN and not run.cancel.is_set():
                run.drained = True
                self.lifecycle.apply(run.notice.event_id, lc.DRAIN_DONE)
                LOG.info(
                    "drain of %s finished: %s",
                    run.notice.event_id,
                    run.summary(),
                    extra=fields(
                        NOTICE_ID=run.notice.event_id, KIND=run.notice.kind, OUTCOME="drained"
                    ),
                )
                record = self.lifecycle.get(run.notice.event_id) or {}
                self.report.outcome(run.notice, "drained", record)
                if not self.dry_run:
                    self.after_drain(run.notice)
                if run.notice.terminal and self.config.confirm and run.followed_by is None:
                    run.stage = CONFIRMING
                    self.status(f"confirming {run.notice.action}")
                    self._confirm(run, gone)
        except BaseException:
            run.failed = True
            LOG.exception(
                "%s of %s failed",
                run.phase,
                run.notice.event_id,
                extra=fields(NOTICE_ID=run.notice.event_id, PHASE=run.phase),
            )
        finally:
            run.done.set()
            changed()

    def steps(self, run: Run, changed: Callable[[], None]) -> None:
        """The run's steps: actions that stop traffic, the hooks, actions that finish last
        (a resume undoes them in the opposite order). Each result is recorded as it comes."""
        notice = run.notice
        event_id = notice.event_id
        hooks, refused = self.hooks()
        for bad in refused:
            LOG.error(
                "refusing hook %s: %s",
                bad.name,
                bad.reason,
                extra=fields(HOOK=bad.name, OUTCOME="refused"),
            )
        done = self.lifecycle.finished_hooks(event_id, run.phase)
        if done:
            LOG.info(
                "hooks already finished before a restart, not run again: %s",
                ", ".join(sorted(done)),
            )
        todo = select_hooks(hooks, notice.kind, run.phase, done | self._covered(run))
        mine = [a for a in self.actions if a.handles(notice) and a.hook_name not in done]
        first = [a for a in mine if a.stage == BEFORE]
        last = [a for a in mine if a.stage != BEFORE]
        if run.phase == RESUME:
            first, last = last[::-1], first[::-1]
        run.total = len(todo) + len(mine)
        if not todo and not mine:
            LOG.info("no hook handles %s (%s)", notice.kind, run.phase)

        def started(hook: Hook, pgid: int) -> None:
            self.lifecycle.hook_started(event_id, run.phase, hook.name, pgid)

        def record(name: str, result: HookResult, action: bool = False) -> None:
            run.results.append(result)
            cut_short = run.cancel.is_set() and result.outcome in (SKIPPED, TIMEOUT)
            # An action's error was retried within the budget: done. A hook's means it
            # never started, so a restart runs it.
            unfinished = (SKIPPED,) if action else (ERROR, SKIPPED)
            finished = result.outcome not in unfinished and not cut_short
            self.lifecycle.hook_result(event_id, run.phase, name, result.to_dict(), finished)
            self.report.hook_result(notice, run.phase, result)
            changed()

        ctx = ActionContext(
            notice, run.phase, lambda: run.end, self.clock, self.dry_run, run.cancel, self.config
        )
        step = (lambda a: a.drain(ctx)) if run.phase == DRAIN else (lambda a: a.resume(ctx))
        if run.phase == DRAIN:
            for action in mine:
                action.begin(ctx)
        try:
            for action in first:
                record(action.hook_name, step(action), action=True)
            self.runner.run(
                todo,
                notice,
                run.phase,
                lambda: run.end,
                run.deadline,
                dry_run=self.dry_run,
                cancel=run.cancel,
                on_start=started,
                on_result=lambda hook, result: record(hook.name, result),
            )
            for action in last:
                record(action.hook_name, step(action), action=True)
        finally:
            if run.phase == DRAIN:
                for action in mine:
                    action.end()

    def _covered(self, run: Run) -> set[str]:
        """Hooks that a termination drained just before this one already ran: not run again
        for this notice, and not resumed if this one is withdrawn while that one stands."""
        first = (self.lifecycle.get(run.notice.event_id) or {}).get("after")
        if not first or self.lifecycle.get(first) is None:
            return set()
        covered = self.lifecycle.finished_hooks(first, DRAIN)
        if covered and run.phase == DRAIN:
            LOG.info("hooks that ran for %s, not run again: %s", first, ", ".join(sorted(covered)))
        return covered

    def _confirm(self, run: Run, gone: Callable[[], bool]) -> None:
        """Ask the cloud API within the budget, while the loop keeps polling."""
        notice = run.notice
        budget_end = confirmation_end(run.deadline, self.clock, self.config)
        try:
            run.confirmation = self.confirmer(notice, budget_end, gone, run.cancel)
        except Exception as exc:
            LOG.exception("confirming %s failed", notice.event_id)
            run.confirmation = Confirmation(Verdict.UNKNOWN, f"{type(exc).__name__}: {exc}")
