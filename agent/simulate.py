"""``preempt-agent simulate``: a synthetic notice through the daemon's own run, dry.

The same steps in the same order as the daemon (actions, hooks, actions), by the same worker
(:class:`agent.runs.Worker`); hooks see ``PREEMPT_DRY_RUN=1`` and actions say what they
would do without calling any API. Nothing is written to the state file.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import timedelta
from pathlib import Path

from agent import exitcodes
from agent.config import Config
from agent.notice import Notice

LOG = logging.getLogger(__name__)


def simulate(config: Config, kind: str, action: str, seconds: float, phase: str) -> int:
    """Exit 0 when every step was ok, 1 otherwise (a failed or refused hook)."""
    from agent.actions import build
    from agent.cli import WATCHABLE, resolve_provider
    from agent.clock import Clock
    from agent.clouds import get
    from agent.hooks.runner import OK
    from agent.lifecycle import Lifecycle
    from agent.runs import Run, Worker, discover_hooks, run_window
    from agent.state import StateFile

    clock = Clock()
    now = clock.now()
    cloud, _ = resolve_provider(config)
    notice = Notice(
        provider=cloud or "simulated",
        kind=kind,
        action=action,
        instance_id="i-simulated",
        event_id=f"simulated:{kind}",
        deadline=now + timedelta(seconds=seconds),
        raw="{}",
        detected_at=now,
    )
    refused = []

    def hooks():  # type: ignore[no-untyped-def]
        found, bad = discover_hooks(config)
        refused.extend(bad)
        return found, bad

    actions = build(config, get(cloud)) if cloud in WATCHABLE else []
    with tempfile.TemporaryDirectory(prefix="preempt-simulate-") as scratch:
        # A lifecycle with no record: results are read by no one and written nowhere.
        lifecycle = Lifecycle(StateFile(Path(scratch), "simulated"))
        worker = Worker(
            config, clock, lifecycle, hooks, lambda *a: None, dry_run=True, actions=actions
        )
        deadline, end = run_window(notice, phase, clock, config)
        run = Run(notice, phase, deadline, end)
        worker.steps(run, lambda: None)
    for result in run.results:
        print(
            f"{result.hook}: {result.outcome} in {result.duration:.1f} s {result.detail}".rstrip()
        )
    if not run.results:
        print(f"no hook handles {kind} ({phase})")
    ok = all(r.outcome == OK for r in run.results) and not refused
    return exitcodes.FINISHED if ok else exitcodes.FAILURE
