"""Benchmark of the real agent process: latency, idle cost, start-up. Not a test.

    python tests/bench/bench_agent.py [--notices 40] [--idle-seconds 120]

- notice-to-first-hook latency: a spot notice appears at a random moment of the agent's
  1 s poll cycle (the default interval); a hook records when it starts. Median and p99 over
  ``--notices`` runs, each a fresh agent process.
- start-up: from process start to READY=1 on a real sd_notify socket (systemd-python needed;
  otherwise to the "watching" log line).
- idle cost: CPU time (utime+stime from /proc) and resident memory of an agent polling the
  mock with the default config for ``--idle-seconds``, CPU scaled to a percentage of a core.
Everything runs on loopback against the mock metadata service.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent import mock  # noqa: E402
from agent.clouds.aws import mock as aws_mock  # noqa: E402

SPOT = "/latest/meta-data/spot/instance-action"
HOOK = """#!/bin/sh
date +%s.%N > {out}
"""


def _setup(tmp: Path, url: str) -> Path:
    hooks = tmp / "hooks.d"
    hooks.mkdir(mode=0o755, exist_ok=True)
    hook = hooks / "10-mark"
    hook.write_text(HOOK.format(out=tmp / "hook-start"))
    hook.chmod(0o755)
    config = tmp / "agent.toml"
    config.write_text(
        f'provider = "aws"\nhooks_dir = "{hooks}"\nstate_dir = "{tmp / "state"}"\n'
        # Plugins stay on (the default): their discovery is part of notice-to-hook latency.
        # Confirmation (after the measured interval) is off: it would talk to a real EC2 API.
        f'probe_metadata = false\nconfirm = false\n[aws]\nmetadata_url = "{url}"\n'
    )
    return config


def _start(config: Path, notify_path: Path | None) -> subprocess.Popen[bytes]:
    # The tests' network guard: the agent may reach loopback only.
    guard = REPO / "tests" / "guard"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(guard), str(REPO)]))
    if notify_path is not None:
        env["NOTIFY_SOCKET"] = str(notify_path)
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(config), "--log-format", "text", "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _wait(predicate, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise TimeoutError


def _notify_socket(tmp: Path) -> tuple[socket.socket, Path]:
    path = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock, path


def _until_ready(sock: socket.socket, timeout: float) -> None:
    sock.settimeout(timeout)
    while b"READY=1" not in sock.recv(4096):
        pass


def latency_and_startup(notices: int) -> tuple[list[float], list[float]]:
    latencies, startups = [], []
    for _ in range(notices):
        with (
            tempfile.TemporaryDirectory() as tmp_name,
            mock.MockMetadataServer(aws_mock.FLAVOR) as server,
        ):
            tmp = Path(tmp_name)
            aws_mock.defaults(server)
            config = _setup(tmp, server.url)
            sock, path = _notify_socket(tmp)
            began = time.monotonic()
            agent = _start(config, path)
            _until_ready(sock, 10)
            startups.append(time.monotonic() - began)
            sock.close()
            # First poll done, then a random phase of the 1 s cycle.
            _wait(lambda: any(r.path == SPOT for r in server.requests), 10)
            time.sleep(random.uniform(0, 1.0))  # noqa: S311 - a phase, not a secret
            deadline = datetime.now(timezone.utc) + timedelta(seconds=120)
            appeared = time.time()
            server.set(SPOT, aws_mock.spot_action("terminate", deadline))
            mark = tmp / "hook-start"
            started = float(_wait(lambda m=mark: m.exists() and m.read_text().strip(), 10))
            latencies.append(started - appeared)
            agent.wait(20)
    return latencies, startups


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def idle(seconds: float) -> tuple[float, int, int]:
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        mock.MockMetadataServer(aws_mock.FLAVOR) as server,
    ):
        tmp = Path(tmp_name)
        aws_mock.defaults(server)
        agent = _start(_setup(tmp, server.url), None)
        try:
            _wait(lambda: any(r.path == SPOT for r in server.requests), 10)
            time.sleep(2)  # past start-up and the first poll of every watcher
            cpu0, t0 = _cpu_seconds(agent.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = _cpu_seconds(agent.pid), time.monotonic()
            rss, pss = _memory(agent.pid)
        finally:
            agent.terminate()
            agent.wait(10)
    return (cpu1 - cpu0) / (t1 - t0) * 100, rss, pss


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notices", type=int, default=40)
    parser.add_argument("--idle-seconds", type=float, default=120.0)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    latencies, startups = latency_and_startup(args.notices)
    ms = [x * 1000 for x in latencies]
    print(
        f"notice-to-first-hook latency over {len(ms)} notices (1 s poll): "
        f"median {statistics.median(ms):.0f} ms, p99 {_pct(ms, 0.99):.0f} ms, max {max(ms):.0f} ms"
    )
    print(
        f"start-up to READY=1: median {statistics.median(startups) * 1000:.0f} ms, "
        f"max {max(startups) * 1000:.0f} ms"
    )
    cpu, rss, pss = idle(args.idle_seconds)
    print(
        f"idle over {args.idle_seconds:.0f} s at the default intervals: CPU {cpu:.3f}% of a core "
        f"({cpu * 36:.1f} CPU-seconds per hour), RSS {rss / 1024:.1f} MiB, PSS {pss / 1024:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
