"""Command line: ``preempt-agent run | check | status | simulate | demo``.

Exit codes are in :mod:`agent.exitcodes` and the README.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from agent import __version__, clouds, exitcodes, statelock
from agent.config import Config, ConfigError, load
from agent.logs import FORMATS, setup
from agent.notice import KINDS, SPOT_INTERRUPTION

LOG = logging.getLogger(__name__)

WATCHABLE = clouds.names()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="preempt-agent",
        description="Watches instance metadata for spot/preemptible interruption notices and "
        "runs drain hooks before the deadline.",
        epilog="Exit codes: 0 finished, 1 failure, 2 usage, 3 check failed, 4 not confirmed, "
        "5 unsupported cloud, 6 already running, 78 bad config. "
        "Configuration: /etc/preempt-agent/agent.toml.",
    )
    parser.add_argument("--version", action="version", version=f"preempt-agent {__version__}")
    _global_options(parser, {"config": None, "log_format": "auto", "log_level": None})
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run_command = commands.add_parser("run", help="the daemon: watch, drain, confirm, exit")
    # Hidden: hooks see PREEMPT_DRY_RUN=1 (what `demo` runs).
    run_command.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    commands.add_parser("check", help="validate config and hooks, print the plan")
    status = commands.add_parser(
        "status",
        help="what the agent watches, the current or last notice, each hook's result",
        epilog="Exit codes: 0 no drain under way, 10 a drain or resume is under way.",
    )
    status.add_argument("--json", action="store_true", help="one JSON object, for machines")
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
    demo.add_argument("--provider", choices=WATCHABLE, default=WATCHABLE[0])
    demo.add_argument("--lead", type=float, default=4.0, help="seconds before the notice appears")
    for command in commands.choices.values():
        _global_options(command)
    return parser


def _global_options(parser: argparse.ArgumentParser, defaults: Optional[dict] = None) -> None:
    """--config, --log-format and --log-level, accepted before the command and after it.

    Each command repeats them with no default (SUPPRESS), so a value given before the
    command is kept unless it is given again after it.
    """

    def default(name: str) -> object:
        return argparse.SUPPRESS if defaults is None else defaults[name]

    parser.add_argument(
        "--config",
        type=Path,
        default=default("config"),
        help="config file (default /etc/preempt-agent/agent.toml)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=default("log_format"),
        help="default: journal under systemd, else text",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=default("log_level"),
        help="overrides log_level",
    )


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
            return run(config, dry_run=args.dry_run)
        if args.command == "check":
            from agent.checks import check

            return check(config)
        if args.command == "status":
            from agent.report.status import show

            return show(config, args.json)
        from agent.simulate import simulate

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
    from agent.detect import detect, metadata_probe

    detection = detect(config.sysfs_root, metadata_probe(config) if config.probe_metadata else None)
    return detection.cloud, detection.evidence


def run(config: Config, dry_run: bool = False) -> int:
    from agent import clouds
    from agent.clock import Clock
    from agent.lifecycle import Lifecycle
    from agent.loop import Daemon
    from agent.report import CLOSE_GRACE
    from agent.report import build as build_report
    from agent.state import StateFile, read_boot_id
    from agent.systemd import notifier_from_env

    try:
        lock = statelock.acquire(config.state_dir)
    except statelock.AlreadyRunning as exc:
        LOG.error("%s; not starting a second one", exc)
        return exitcodes.ALREADY_RUNNING
    except OSError as exc:  # a read-only or missing state folder: draining matters more
        lock = None
        LOG.error("cannot lock %s (%s); running without the lock", config.state_dir, exc)
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
    try:
        report = build_report(config, config.state_dir, cloud)
    except ConfigError as exc:
        LOG.error("invalid configuration: %s", exc)
        notifier.ready("invalid configuration")
        notifier.stopping("invalid configuration")
        return exitcodes.CONFIG
    daemon = Daemon(
        config,
        clouds.get(cloud),
        Clock(),
        notifier,
        Lifecycle(StateFile(config.state_dir, read_boot_id())),
        report=report,
        dry_run=dry_run,
    )
    daemon.install_signal_handlers()
    try:
        return daemon.run()
    finally:
        report.close(CLOSE_GRACE)
        if lock is not None:
            lock.release()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
