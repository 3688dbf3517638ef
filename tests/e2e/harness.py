"""Runs the real ``preempt-agent run`` process against mock metadata, with real hook scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Optional

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
GUARD_DIR = REPO / "tests" / "guard"
GUARD_MARK = "NETWORK GUARD"


RECORDING_HOOK = """\
#!/bin/sh
{header}
out="{out}/$(basename "$0")"
date +%s.%N >> "$out.starts"
env | grep '^PREEMPT_\\|^NOTIFY_SOCKET\\|^WATCHDOG_' | sort > "$out.env"
cat > "$out.stdin"
echo "$1" > "$out.arg"
{body}
"""


class Hooks:
    """A hooks.d folder whose hooks record when they ran, what they saw, and their arguments."""

    def __init__(self, folder: Path, out: Path) -> None:
        self.folder = folder
        self.out = out
        folder.mkdir(mode=0o755, exist_ok=True)
        folder.chmod(0o755)
        out.mkdir(exist_ok=True)

    def add(self, name: str, body: str = "", header: str = "") -> Path:
        path = self.folder / name
        text = RECORDING_HOOK.format(header=header, out=self.out, body=textwrap.dedent(body))
        path.write_text(text)
        path.chmod(0o755)
        return path

    def starts(self, name: str) -> list[float]:
        path = self.out / f"{name}.starts"
        return [float(x) for x in path.read_text().split()] if path.exists() else []

    def env(self, name: str) -> dict[str, str]:
        lines = (self.out / f"{name}.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def stdin(self, name: str) -> dict[str, Any]:
        return json.loads((self.out / f"{name}.stdin").read_text())

    def arg(self, name: str) -> str:
        return (self.out / f"{name}.arg").read_text().strip()


def write_config(path: Path, provider: str, metadata_url: str, tmp: Path, extra: str = "") -> Path:
    """A config that can only reach ``metadata_url``: no probing, a fake empty sysfs."""
    sysfs = tmp / "sysfs"
    sysfs.mkdir(exist_ok=True)
    path.write_text(
        textwrap.dedent(f"""\
            provider = "{provider}"
            hooks_dir = "{tmp / "hooks.d"}"
            state_dir = "{tmp / "state"}"
            sysfs_root = "{sysfs}"
            probe_metadata = false
            plugins = false
            safety_margin = 2
            kill_grace = 1
            """)
        + textwrap.dedent(extra).replace("@URL@", metadata_url)
    )
    return path


class Agent:
    """One ``python -m agent run`` process; its log lines are collected as they arrive."""

    def __init__(self, config: Path, env: Optional[dict[str, str]] = None, args: tuple = ()):
        self.config = config
        self.lines: list[str] = []
        self._cond = threading.Condition()
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ALIBABA_", "ALIYUN_"))
        }
        full_env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), str(REPO)])
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "--config",
                str(config),
                "--log-format",
                "json",
                *args,
                "run",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def records(self) -> list[dict[str, Any]]:
        out = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"message": line, "level": "raw"})
        return out

    def messages(self) -> list[str]:
        return [r.get("message", "") for r in self.records()]

    def wait_for_log(self, needle: str, timeout: float = 10.0) -> dict[str, Any]:
        def find() -> Optional[dict[str, Any]]:
            for record in self.records():
                if needle in record.get("message", ""):
                    return record
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited {self.proc.returncode} before logging {needle!r}:\n{self.dump()}"
                )
            return None

        try:
            return wait_until(find, timeout, f"log line {needle!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.dump()}") from None

    def wait(self, timeout: float = 20.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout} s:\n{self.dump()}") from None
        self._reader.join(timeout=5)
        return code

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def dump(self) -> str:
        with self._cond:
            return "\n".join(self.lines[-60:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(timeout=5)
        with self._cond:
            leaked = [line for line in self.lines if GUARD_MARK in line]
        assert not leaked, f"the agent tried to leave loopback: {leaked}"
