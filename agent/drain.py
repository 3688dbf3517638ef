"""One run of hooks in the daemon's worker thread: a drain (then, for a termination, its
confirmation through the cloud API) or a resume.

Which hooks run, in what order and until when is decided here, for the daemon and for
``preempt-agent simulate`` alike. The loop in :mod:`agent.daemon` talks to a running drain
only through its :class:`Drain`: it may bring ``end`` forward (the runner reads it again
while hooks run), set ``cancel``, or set ``gone`` when the notice leaves metadata.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Optional

from agent import state
from agent.clock import Clock
from agent.config import Config
from agent.hooks import DRAIN, RESUME, Hook, Refused, plugins, scripts
from agent.hooks.runner import SKIPPED, TIMEOUT, HookResult, HookRunner, hook_deadline
from agent.logs import fields
from agent.notice import Notice
from agent.providers.base import Confirmation, Provider, Verdict
from agent.systemd import Notifier

LOG = logging.getLogger(__name__)

HookSource = Callable[[], "tuple[list[Hook], list[Refused]]"]
HOOKS, CONFIRMING = "hooks", "confirming"


def discover_hooks(config: Config) -> tuple[list[Hook], list[Refused]]:
    """Scripts from hooks_dir, then plugins; read afresh for every drain.

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

    A drain ends ``safety_margin`` before the notice's deadline, and within ``max_run_time``.
    A resume gets ``max_run_time``: the notice's deadline no longer matters.
    """
    now = clock.now()
    bound = now + timedelta(seconds=config.max_run_time)
    if phase == RESUME:
        return bound, clock.monotonic_at(bound)
    deadline = hook_deadline(notice, now, config.max_run_time)
    return deadline, clock.monotonic_at(min(deadline, bound)) - config.safety_margin


@dataclass
class Drain:
    """A run and what came of it, shared by the worker thread and the loop."""

    notice: Notice
    phase: str
    end: float  # monotonic; the loop brings it forward for an earlier termination
    forget: bool = False  # resume phase: drop the record afterwards
    thread: threading.Thread = field(init=False)
    cancel: threading.Event = field(default_factory=threading.Event)
    results: list[HookResult] = field(default_factory=list)
    total: int = 0
    stage: str = HOOKS
    drained: bool = False  # the hooks ran to the end (set by the worker)
    failed: bool = False  # the worker raised (set by the worker)
    gone: threading.Event = field(default_factory=threading.Event)  # left metadata
    confirmation: Optional[Confirmation] = None
    then: Optional[Notice] = None  # a termination with an earlier deadline, drained next

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        return ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no hooks"


class Worker:
    """Runs a :class:`Drain` in its thread; ``stopping()`` tells whether systemd stops us."""

    def __init__(
        self,
        config: Config,
        provider: Provider,
        clock: Clock,
        notifier: Notifier,
        store: state.StateStore,
        hook_source: HookSource,
        stopping: Callable[[], bool],
    ) -> None:
        self.config = config
        self.provider = provider
        self.clock = clock
        self.notifier = notifier
        self.state = store
        self.hook_source = hook_source
        self.stopping = stopping
        self.runner = HookRunner(clock, config.kill_grace, config.hook_timeout)

    def run(self, drain: Drain, deadline: datetime) -> None:
        """The thread's target. Whatever it raises marks the run failed: the loop then exits
        1, systemd restarts the agent, and the restart picks the run up from the state file."""
        try:
            self._run_hooks(drain, deadline)
            if drain.phase == DRAIN and not drain.cancel.is_set():
                self._drained(drain)
                if drain.notice.terminal and self.config.confirm and drain.then is None:
                    self._confirm(drain, deadline)
        except BaseException:
            drain.failed = True
            LOG.exception(
                "%s of %s failed",
                drain.phase,
                drain.notice.event_id,
                extra=fields(NOTICE_ID=drain.notice.event_id, PHASE=drain.phase),
            )
        finally:
            self.clock.wake()  # the main loop handles the end of the run at once

    def _run_hooks(self, drain: Drain, deadline: datetime) -> None:
        notice = drain.notice
        hooks, refused = self.hook_source()
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
        todo = select_hooks(hooks, notice.kind, drain.phase, done | self._covered(drain))
        drain.total = len(todo)
        if not todo:
            LOG.info("no hook handles %s (%s)", notice.kind, drain.phase)

        def record(hook: Hook, result: HookResult) -> None:
            drain.results.append(result)
            if drain.cancel.is_set() and result.outcome in (SKIPPED, TIMEOUT):
                return  # cut short by the cancel, not finished: it runs again
            self.state.hook_result(notice.event_id, drain.phase, hook.name, result.to_dict())

        self.runner.run(
            todo,
            notice,
            drain.phase,
            lambda: drain.end,
            deadline,
            cancel=drain.cancel,
            on_result=record,
        )

    def _covered(self, drain: Drain) -> set[str]:
        """Hooks that a termination drained just before this one already ran: not run again
        for this notice, and not resumed if this one is withdrawn while that one stands."""
        first = (self.state.get(drain.notice.event_id) or {}).get("after")
        if not first or self.state.get(first) is None:
            return set()
        covered = self.state.finished_hooks(first, DRAIN)
        if covered and drain.phase == DRAIN:
            LOG.info("hooks that ran for %s, not run again: %s", first, ", ".join(sorted(covered)))
        return covered

    def _drained(self, drain: Drain) -> None:
        """Once the hooks ran to the end: record it before any confirmation."""
        notice = drain.notice
        drain.drained = True
        self.state.set_status(notice.event_id, state.DRAINED)
        LOG.info(
            "drain of %s finished: %s",
            notice.event_id,
            drain.summary(),
            extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind, OUTCOME="drained"),
        )

    def _confirm(self, drain: Drain, deadline: datetime) -> None:
        """After a termination drain: ask the cloud API within the budget.

        The budget runs to the notice's deadline plus ``confirm_grace``; the main loop keeps
        polling meanwhile and sets ``drain.gone`` when the notice leaves metadata.
        """
        notice = drain.notice
        drain.stage = CONFIRMING
        self.notifier.status(f"confirming {notice.action}")
        if self.stopping():
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
