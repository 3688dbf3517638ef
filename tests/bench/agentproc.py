"""The benchmark's plumbing: a throw-away setup, the agent process, and what /proc says of it.

The agent runs as ``python -m agent run`` with the tests' network guard on its path, so it
can reach loopback only; its stderr goes to a file that is checked for the guard's mark.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[2]
GUARD = REPO / "tests" / "guard"
GUARD_MARK = "NETWORK GUARD"
HOOK = "#!/bin/sh\ndate +%s.%N > {out}\n"


class Setup:
    """Hooks, state and config in ``tmp`` for one agent of ``provider`` against ``url``."""

    def __init__(self, tmp: Path, provider: str, url: str, metrics: bool = False) -> None:
        self.tmp = tmp
        self.mark = tmp / "hook-start"
        self.log = tmp / "agent.stderr"
        hooks = tmp / "hooks.d"
        hooks.mkdir(mode=0o755, exist_ok=True)
        hook = hooks / "10-mark"  # no kinds line: the terminations, as default hooks
        hook.write_text(HOOK.format(out=self.mark))
        hook.chmod(0o755)
        (tmp / "sysfs").mkdir(exist_ok=True)
        text = (
            f'provider = "{provider}"\nhooks_dir = "{hooks}"\nstate_dir = "{tmp / "state"}"\n'
            f'sysfs_root = "{tmp / "sysfs"}"\n'
            # Plugins stay on (the default): their discovery is part of notice-to-hook latency.
            # Confirmation (after the measured interval) is off: it would ask a real cloud API.
            "probe_metadata = false\nconfirm = false\n"
            f'[{provider}]\nmetadata_url = "{url}"\n'
        )
        if metrics:
            text += f'[metrics]\ntextfile = "{tmp / "agent.prom"}"\n'
        self.config = tmp / "agent.toml"
        self.config.write_text(text)

    def hook_started(self) -> Optional[float]:
        """The wall-clock time the hook recorded, once it has."""
        try:
            text = self.mark.read_text().strip()
        except FileNotFoundError:
            return None
        return float(text) if text else None


class Agent:
    """One agent process, with an sd_notify socket of its own when ``notify`` is set."""

    def __init__(self, setup: Setup, notify: bool = True) -> None:
        self.setup = setup
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(GUARD), str(REPO)]))
        self.sock: Optional[socket.socket] = None
        if notify:
            path = setup.tmp / "notify.sock"
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
            env["NOTIFY_SOCKET"] = str(path)
        command = [sys.executable, "-m", "agent", "--config", str(setup.config)]
        self._stderr = setup.log.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*command, "--log-format", "text", "run"],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
        )
        self.pid = self.proc.pid

    def until_ready(self, timeout: float = 20.0) -> float:
        """Seconds from process start to READY=1."""
        assert self.sock is not None
        end = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                raise self.failed("no READY=1") from None
            if b"READY=1" in data:
                return time.monotonic() - self.started

    def failed(self, what: str) -> RuntimeError:
        tail = self.setup.log.read_text(errors="replace").splitlines()[-15:]
        return RuntimeError(f"{what}; agent exit {self.proc.poll()}; stderr:\n" + "\n".join(tail))

    def check_guard(self) -> None:
        if GUARD_MARK in self.setup.log.read_text(errors="replace"):
            raise self.failed("the agent tried to leave loopback")

    def stop(self, grace: float = 30.0) -> Optional[int]:
        """Wait up to ``grace`` s for it to exit by itself, then SIGTERM; its exit code."""
        try:
            code: Optional[int] = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            code = None
        self._stderr.close()
        if self.sock is not None:
            self.sock.close()
        self.check_guard()
        return code

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (every thread), from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> tuple[int, int]:
        """(RSS, PSS) in KiB."""
        rss = pss = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{self.pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
        return rss, pss


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)
