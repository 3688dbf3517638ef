"""``preempt-agent check``: the config, the cloud, the hooks and actions, and whether the
settings leave hooks time in a short notice. Exit 3 on any problem."""

from __future__ import annotations

import os

from agent import exitcodes
from agent.cli import WATCHABLE, resolve_provider
from agent.config import Config
from agent.notice import KINDS


def check(config: Config) -> int:
    """Print what the agent would do here; exit 3 (CHECK_FAILED) on any problem."""
    from agent.hooks import scripts
    from agent.runs import discover_hooks

    problems = 0
    print(f"config: {config.source or 'defaults (no config file)'}: ok")
    cloud, evidence = resolve_provider(config)
    if cloud in WATCHABLE:
        print(f"cloud: detected {cloud} from {evidence}")
    else:
        print(
            f"cloud: {cloud or 'none'} ({evidence}): "
            f"run would exit {exitcodes.UNSUPPORTED}, nothing to watch"
        )
    hooks, refused = discover_hooks(config)
    print(f"hooks: {config.hooks_dir}{' and plugins' if config.plugins else ''}")
    if not config.hooks_dir.exists():
        problems += 1
        print(f"  MISSING {config.hooks_dir}: the folder does not exist; no hook script will run")
    for skipped in scripts.passed_over(config.hooks_dir):
        problems += 1
        print(f"  SKIPPED {skipped.name}: {skipped.reason}")
    for kind in KINDS:
        names = [h.name for h in hooks if h.handles(kind, "drain")]
        print(f"  {kind}: {', '.join(names) if names else '(none)'}")
    resumable = [h.name for h in hooks if h.resume]
    print(f"  resume: {', '.join(resumable) if resumable else '(none)'}")
    for bad in refused:
        problems += 1
        print(f"  REFUSED {bad.name}: {bad.reason}")
    if cloud in WATCHABLE:
        from agent.actions import build
        from agent.clouds import get

        actions = build(config, get(cloud))
        print(f"actions: {'(none)' if not actions else ''}".rstrip())
        for action in actions:
            when = "before the hooks" if action.stage == "before" else "after the hooks"
            kinds = ", ".join(sorted(action.kinds))
            print(f"  {action.describe()} ({when}; for {kinds})")
    if os.geteuid() == 0 and not config.state_dir.exists():
        print(f"state: {config.state_dir} does not exist yet (created on first write)")
    unfit = window_problems(config)
    for problem in unfit:
        print(f"  REFUSED settings: {problem}")
    if not unfit:
        left = ", ".join(
            f"{w - config.safety_margin - config.kill_grace:g} s of {w:g} s" for w in WINDOWS
        )
        print(f"settings: hooks get {left} (safety_margin and kill_grace taken off)")
    problems += len(unfit)
    return exitcodes.CHECK_FAILED if problems else exitcodes.FINISHED


WINDOWS = (120.0, 30.0)
"""Notice windows every setup must fit: AWS's 2 minutes, and a short 30 seconds."""
MIN_HOOK_TIME = 5.0
"""Less than this for all hooks together is no drain."""
MIN_HOOK_TIMEOUT = 1.0


def window_problems(config: Config) -> list[str]:
    """Why these settings cannot drain within a 2-minute or 30-second notice (or within
    max_run_time, for notices without a deadline), with the numbers; [] when they can."""
    margins = config.safety_margin + config.kill_grace
    problems = []
    windows = [(w, f"a {w:g} s notice") for w in WINDOWS]
    windows.append((config.max_run_time, f"max_run_time = {config.max_run_time:g} s"))
    for window, what in windows:
        left = window - margins
        if left < MIN_HOOK_TIME:
            problems.append(
                f"{what} leaves hooks {max(0.0, left):g} s: safety_margin "
                f"{config.safety_margin:g} s + kill_grace {config.kill_grace:g} s = {margins:g} s "
                f"of it; at least {MIN_HOOK_TIME:g} s must be left"
            )
    if 0 < config.hook_timeout < MIN_HOOK_TIMEOUT:
        problems.append(
            f"hook_timeout = {config.hook_timeout:g} s kills every hook before it can do anything "
            f"(0 = whatever is left, else at least {MIN_HOOK_TIMEOUT:g} s)"
        )
    return problems
