"""Benchmark of the real agent process against one cloud's mock: latency, start-up, idle cost.

    python tests/bench/bench_agent.py [--provider aws] [--notices 40] [--idle-seconds 120]
                                      [--metrics]

Not a test. Everything runs at the cloud's default settings, on loopback, against the mock
metadata service of ``--provider`` (``agent/clouds/<name>/mock.py``); every agent process
carries the tests' network guard, so it can reach loopback only.

- notice-to-first-hook latency: for each of ``--notices`` fresh agent processes, a spot
  notice appears at a random moment of the watcher's poll cycle (after one settling cycle,
  so the watcher is polling steadily; on GCP a hanging GET is in flight); a hook records
  when it starts. Median, p99 and max.
- start-up: from process start to READY=1 on a real sd_notify socket, over the same runs.
- idle cost: CPU time (utime+stime of every thread, from /proc) over ``--idle-seconds`` of
  an agent at the default intervals, as a percentage of one core; RSS and PSS at the end;
  the requests the mock logged in that time, and the CPU each cost (CPU / requests).
  ``--metrics`` turns ``[metrics] textfile`` on, to show the footprint stays within targets.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent import clouds, config, exitcodes
from agent.mock import MockCloud, flavors
from tests.bench.agentproc import Agent, Setup, wait_for

P99_TARGETS = {"aws": 0.6, "gcp": 0.05, "azure": 1.1}
"""Notice-to-first-hook p99, seconds, at default settings (the README's Benchmarks)."""
CPU_TARGET = 0.2
"""Idle CPU, percent of one core (the same bound is shown for every cloud)."""
RSS_TARGET_MIB = 30.0
SETTLE = 2.0
"""Seconds after READY=1 before the idle window opens: the first poll of every watcher."""


def default_interval(provider: str, watcher: str) -> float:
    """The notice watcher's poll interval in the default config (0 = hanging GETs)."""
    section = config.section_classes()[provider]()
    return float(getattr(section, watcher).interval)


def one_notice(provider: str, mock: MockCloud, cycle: float) -> tuple[float, float]:
    """(notice-to-first-hook, start-up to READY=1) of one fresh agent, in seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, mock.make_server() as server:
        mock.defaults(server)
        setup = Setup(Path(tmp), provider, server.url)
        agent = Agent(setup)
        try:
            startup = agent.until_ready()
            # One cycle to settle into steady polling, then a random phase of the next.
            time.sleep(cycle + random.uniform(0, cycle))  # noqa: S311 - a phase, not a secret
            deadline = datetime.now(timezone.utc) + timedelta(seconds=120)
            appeared, at = time.time(), time.monotonic()
            path = mock.spot_notice(server, deadline, at)  # visible at once: ``at`` is now
            started = wait_for(setup.hook_started, 20, "the hook to start")
            if not any(r.path == path and r.time < at for r in server.requests):
                raise agent.failed(f"{path} was not polled before the notice appeared")
        except BaseException:
            agent.proc.terminate()
            agent.stop()
            raise
        if agent.stop() != exitcodes.FINISHED:  # one drain, no confirmation: it ends itself
            raise agent.failed("the agent did not finish by itself after the drain")
    return started - appeared, startup


def latency(provider: str, notices: int) -> tuple[list[float], list[float]]:
    mock = flavors()[provider]
    interval = default_interval(provider, mock.watcher)
    cycle = interval if interval > 0 else 1.0
    latencies, startups = [], []
    for i in range(notices):
        lat, startup = one_notice(provider, mock, cycle)
        latencies.append(lat)
        startups.append(startup)
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\033[K  notice {i + 1}/{notices}: {lat * 1000:.0f} ms")
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    return latencies, startups


class Idle:
    """What one idle agent cost over a window."""

    def __init__(self, provider: str, seconds: float, metrics: bool) -> None:
        mock = flavors()[provider]
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp, mock.make_server() as server:
            mock.defaults(server)
            setup = Setup(Path(tmp), provider, server.url, metrics=metrics)
            agent = Agent(setup)
            try:
                agent.until_ready()
                time.sleep(SETTLE)
                cpu0, n0, t0 = agent.cpu_seconds(), len(server.requests), time.monotonic()
                time.sleep(seconds)
                cpu1, t1 = agent.cpu_seconds(), time.monotonic()
                window = server.requests[n0:]
                self.rss, self.pss = agent.memory_kib()
                self.textfile = (Path(tmp) / "agent.prom").exists()
            finally:
                agent.proc.terminate()
                agent.stop()
        self.seconds = t1 - t0
        self.cpu = cpu1 - cpu0
        self.percent = self.cpu / self.seconds * 100
        self.requests = len(window)
        self.paths = Counter(r.path for r in window)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "OVER"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(provider: str, args: argparse.Namespace) -> None:
    mock = flavors()[provider]
    interval = default_interval(provider, mock.watcher)
    how = f"every {interval:g} s" if interval > 0 else "hanging GETs"
    print(f"== {provider}: notice watcher [{provider}.{mock.watcher}] {how} (default settings)")
    if args.notices > 0:
        latencies, startups = latency(provider, args.notices)
        ms = [x * 1000 for x in latencies]
        p99 = _pct(ms, 0.99)
        line = (
            f"notice-to-first-hook over {len(ms)} notices: median {statistics.median(ms):.0f} ms,"
            f" p99 {p99:.0f} ms, max {max(ms):.0f} ms"
        )
        target = P99_TARGETS.get(provider)
        if target is not None:
            target_ms = target * 1000
            line += f"  [target p99 <= {target_ms:.0f} ms: {_verdict(p99, target_ms)}]"
        print(line)
        print(
            f"start-up to READY=1: median {statistics.median(startups) * 1000:.0f} ms, "
            f"max {max(startups) * 1000:.0f} ms"
        )
    if args.idle_seconds > 0:
        idle = Idle(provider, args.idle_seconds, args.metrics)
        extra = ", [metrics] textfile on" if args.metrics else ""
        tick = 100 / os.sysconf("SC_CLK_TCK") / idle.seconds  # /proc counts CPU in ticks
        if args.metrics and not idle.textfile:
            extra += " (BUT NO FILE WRITTEN)"
        print(
            f"idle over {idle.seconds:.0f} s{extra}: CPU {idle.percent:.3f} % of a core "
            f"({idle.percent * 36:.1f} CPU-s an hour, +/- {tick:.3f} %)  "
            f"[target <= {CPU_TARGET} %: {_verdict(idle.percent, CPU_TARGET)}]"
        )
        rss, pss = idle.rss / 1024, idle.pss / 1024
        print(
            f"idle memory: RSS {rss:.1f} MiB, PSS {pss:.1f} MiB  "
            f"[target RSS <= {RSS_TARGET_MIB:g} MiB: {_verdict(rss, RSS_TARGET_MIB)}]"
        )
        if idle.requests:
            per = idle.cpu / idle.requests * 1000
            top = ", ".join(f"{path} {n}" for path, n in idle.paths.most_common(4))
            print(
                f"idle requests: {idle.requests} ({idle.requests / idle.seconds:.2f}/s), "
                f"{per:.2f} ms CPU each (all idle CPU / requests); {top}"
            )
        else:
            print("idle requests: none in the window (a hanging GET holds longer)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [name for name in clouds.names() if name in flavors()]
    parser.add_argument("--provider", choices=[*names, "all"], default="aws")
    parser.add_argument("--notices", type=int, default=40, help="0 skips latency and start-up")
    parser.add_argument("--idle-seconds", type=float, default=120.0, help="0 skips idle cost")
    parser.add_argument("--metrics", action="store_true", help="idle with [metrics] textfile on")
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average {_load()}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    for provider in names if args.provider == "all" else [args.provider]:
        report(provider, args)
    print(f"load average at the end: {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
