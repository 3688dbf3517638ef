"""``preempt-agent status`` against real state files, as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.report.runtime import RUNTIME_FILE, StatusReporter
from agent.report.status import DRAIN_UNDER_WAY
from agent.state import StateFile, read_boot_id
from tests.report.conftest import make_notice, result

ROOT = Path(__file__).resolve().parents[2]


def status(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n')
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests' / 'guard'}:{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def save(tmp_path: Path, *records: tuple[Any, str, dict[str, Any], dict[str, Any]]) -> None:
    StateFile(tmp_path, read_boot_id()).save(
        {
            notice.event_id: {"notice": notice.to_dict(), "status": st, "hooks": hooks, **extra}
            for notice, st, hooks, extra in records
        }
    )


def results(*items: Any) -> dict[str, Any]:
    return {r.hook: r.to_dict() for r in items}


def test_drained_and_confirmed(tmp_path: Path) -> None:
    notice = make_notice()
    drain = results(result("action:aws-elb", "ok", 0.4), result("10-stop", "ok", 3.25))
    save(tmp_path, (notice, "confirmed", {"drain": drain}, {"confirmation": "shutting-down"}))
    done = status(tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "preempt-agent: not running" in out
    assert f"notice {notice.event_id}: spot-interruption (terminate)" in out
    assert f"deadline: {notice.to_dict()['deadline']}" in out
    assert "status: confirmed: shutting-down" in out
    assert "action:aws-elb" in out and "10-stop" in out
    assert "3.2 s" in out

    as_json = status(tmp_path, "--json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["drain_under_way"] is False
    [entry] = report["notices"]
    assert entry["status"] == "confirmed"
    assert entry["hooks"]["drain"]["10-stop"] == {
        "outcome": "ok",
        "duration": 3.25,
        "exit_code": 0,
        "detail": "",
    }
    assert report["cloud"] == "aws"


def test_a_failed_hook(tmp_path: Path) -> None:
    notice = make_notice()
    drain = results(result("10-stop", "failed", 1.0, 3), result("20-flush", "ok", 0.5))
    save(tmp_path, (notice, "drained", {"drain": drain}, {}))
    done = status(tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if "10-stop" in x)
    assert "failed" in line and "exit 3" in line
    [entry] = json.loads(status(tmp_path, "--json").stdout)["notices"]
    assert entry["hooks"]["drain"]["10-stop"]["outcome"] == "failed"


def test_withdrawn(tmp_path: Path) -> None:
    notice = make_notice(kind="rebalance-recommendation", seconds=0)
    hooks = {"drain": results(result("10-stop")), "resume": results(result("90-start", "ok", 2.0))}
    save(tmp_path, (notice, "withdrawn", hooks, {"withdrawn": "no termination within 3600 s"}))
    done = status(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "status: withdrawn: no termination within 3600 s" in done.stdout
    assert "resume:" in done.stdout and "90-start" in done.stdout


def test_a_drain_under_way_has_its_own_exit_code(tmp_path: Path) -> None:
    notice = make_notice()
    save(tmp_path, (notice, "draining", {"drain": results(result("action:aws-elb"))}, {}))
    reporter = StatusReporter(tmp_path, "aws")
    reporter.polled("aws-spot", True)
    reporter.polled("aws-rebalance", True)
    assert notice.deadline is not None
    reporter.notice(notice, notice.deadline)
    reporter.status("draining: 1/2 hooks, 110 s left")
    done = status(tmp_path)
    assert done.returncode == DRAIN_UNDER_WAY == 10, done.stderr
    assert f"running (pid {os.getpid()})" in done.stdout
    assert "watching: aws-rebalance, aws-spot" in done.stdout
    assert "doing: draining: 1/2 hooks, 110 s left" in done.stdout
    assert "status: draining (under way)" in done.stdout
    reporter.close(1.0)
    assert "not running" in status(tmp_path).stdout


def test_runtime_file_keeps_a_forgotten_withdrawal(tmp_path: Path) -> None:
    notice = make_notice(kind="rebalance-recommendation")
    reporter = StatusReporter(tmp_path, "aws")
    assert notice.deadline is not None
    reporter.notice(notice, notice.deadline)
    reporter.hook_result(notice, "resume", result("90-start"))
    reporter.outcome(notice, "resumed", {})
    reporter.close(1.0)
    runtime = json.loads((tmp_path / RUNTIME_FILE).read_text())
    assert runtime["pid"] == os.getpid() and runtime["cloud"] == "aws"
    assert runtime["current"] is None and runtime["last"]["outcome"] == "resumed"
    save(tmp_path)  # the record was forgotten
    report = json.loads(status(tmp_path, "--json").stdout)
    [entry] = report["notices"]
    assert entry["status"] == "resumed" and "90-start" in entry["hooks"]["resume"]


def test_no_state_at_all(tmp_path: Path) -> None:
    done = status(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no notice in this boot" in done.stdout
