"""Command line: ``preempt-agent run | check | simulate | demo``.

Exit codes are in :mod:`agent.exitcodes` and the README.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Optional

from agent import __version__, exitcodes
from agent.config import Config, ConfigError, load
from agent.logs import FORMATS, setup
from agent.notice import KINDS, SPOT_INTERRUPTION, Notice

LOG = logging.getLogger(__name__)

WATCHABLE = ("aws", "alibaba")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preempt-agent",
        description="Watches instance metadata for spot/preemptible interruption notices and "
        "runs drain hooks before the deadline.",
        epilog="Exit codes: 0 finished, 1 failure, 2 usage, 3 check failed, 4 not confirmed, "
        "5 unsupported cloud, 78 bad config. Configuration: /etc/preempt-agent/agent.toml.",
    )
    parser.add_argument("--version", action="version", version=f"preempt-agent {__version__}")
    parser.add_argument(
        "--config", type=Path, help="config file (default /etc/preempt-agent/agent.toml)"
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="auto",
        help="default: journal under systemd, else text",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="overrides log_level"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("run", help="the daemon: watch, drain, confirm, exit")
    commands.add_parser("check", help="validate config and hooks, print the plan")
    simulate = commands.add_parser(
        "simulate", help="run the hooks now for a synthetic notice (PREEMPT_DRY_RUN=1)"
    )
    simulate.add_argument("--kind", choices=KINDS, default=SPOT_INTERRUPTION)
    simulate.add_argument("--action", default="terminate")
    simulate.add_argument(
        "--seconds",
        type=float,
        default=120.0,
        help="notice window (default 120); as in the daemon, max_run_time bounds a drain, "
        "and a resume gets max_run_time",
    )
    simulate.add_argument("--phase", choices=("drain", "resume"), default="drain")
    demo = commands.add_parser("demo", help="the whole cycle against a local mock metadata service")
    demo.add_argument("--provider", choices=WATCHABLE, default="aws")
    demo.add_argument("--lead", type=float, default=4.0, help="seconds before the notice appears")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        setup("text", args.log_level or "info")
        from agent.demo import run_demo

        return run_demo(args.provider, args.lead)
    try:
        config = load(args.config)
    except ConfigError as exc:
        setup(args.log_format, "info")
        LOG.error("invalid configuration: %s", exc)
        if args.command == "check":
            print(f"config: {exc}")
        return exitcodes.CONFIG
    setup(args.log_format, args.log_level or config.log_level)
    try:
        if args.command == "run":
            return run(config)
        if args.command == "check":
            return check(config)
        return simulate(config, args.kind, args.action, args.seconds, args.phase)
    except KeyboardInterrupt:
        return exitcodes.FINISHED
    except Exception:
        LOG.exception("preempt-agent failed")
        return exitcodes.FAILURE


def resolve_provider(config: Config) -> tuple[Optional[str], str]:
    """The cloud to watch and the evidence for it; None when there is none we can watch."""
    if config.provider != "auto":
        return config.provider, "set in the configuration"
    from agent.providers.detect import detect, metadata_probe

    detection = detect(config.sysfs_root, metadata_probe(config) if config.probe_metadata else None)
    return detection.cloud, detection.evidence


def run(config: Config) -> int:
    from agent import providers
    from agent.clock import Clock
    from agent.daemon import Daemon
    from agent.state import StateStore, read_boot_id
    from agent.systemd import notifier_from_env

    notifier = notifier_from_env()
    cloud, evidence = resolve_provider(config)
    if cloud not in WATCHABLE:
        what = f"this is {cloud}" if cloud else "no cloud was detected"
        LOG.error(
            "%s (%s); preempt-agent can watch %s only: nothing to do",
            what,
            evidence,
            ", ".join(WATCHABLE),
        )
        notifier.ready(f"unsupported: {what}")
        notifier.stopping("unsupported cloud")
        return exitcodes.UNSUPPORTED
    LOG.info("preempt-agent %s on %s (%s)", __version__, cloud, evidence)
    daemon = Daemon(
        config,
        providers.get(cloud),
        Clock(),
        notifier,
        StateStore(config.state_dir, read_boot_id()),
    )
    daemon.install_signal_handlers()
    return daemon.run()


def check(config: Config) -> int:
    from agent.daemon import discover_hooks

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
    for kind in KINDS:
        names = [h.name for h in hooks if h.handles(kind, "drain")]
        print(f"  {kind}: {', '.join(names) if names else '(none)'}")
    resumable = [h.name for h in hooks if h.resume]
    print(f"  resume: {', '.join(resumable) if resumable else '(none)'}")
    for bad in refused:
        problems += 1
        print(f"  REFUSED {bad.name}: {bad.reason}")
    if os.geteuid() == 0 and not config.state_dir.exists():
        print(f"state: {config.state_dir} does not exist yet (created on first write)")
    return exitcodes.CHECK_FAILED if problems else exitcodes.FINISHED


def simulate(config: Config, kind: str, action: str, seconds: float, phase: str) -> int:
    """Runs the real hook runner on a synthetic notice; hooks see PREEMPT_DRY_RUN=1."""
    from agent.clock import Clock
    from agent.drain import discover_hooks, run_window, select_hooks
    from agent.hooks.runner import OK, HookRunner

    clock = Clock()
    now = clock.now()
    deadline = now + timedelta(seconds=seconds)
    notice = Notice(
        provider=config.provider if config.provider != "auto" else "simulated",
        kind=kind,
        action=action,
        instance_id="i-simulated",
        event_id=f"simulated:{kind}",
        deadline=deadline,
        raw="{}",
        detected_at=now,
    )
    hooks, refused = discover_hooks(config)
    for bad in refused:
        LOG.error("refusing hook %s: %s", bad.name, bad.reason)
    todo = select_hooks(hooks, kind, phase)  # which, in what order, and until when: as the daemon
    told, end = run_window(notice, phase, clock, config)
    runner = HookRunner(clock, config.kill_grace, config.hook_timeout)
    results = runner.run(todo, notice, phase, end, told, dry_run=True)
    for result in results:
        print(
            f"{result.hook}: {result.outcome} in {result.duration:.1f} s {result.detail}".rstrip()
        )
    if not results:
        print(f"no hook handles {kind} ({phase})")
    return (
        exitcodes.FINISHED
        if all(r.outcome == OK for r in results) and not refused
        else exitcodes.FAILURE
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
