"""The real agent process: a hook that could not be started is never recorded as finished,
so the restart that picks the drain up runs it (a full disk, a missing interpreter); and
that restart first ends the copy of a hook the crashed agent left running.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from agent import exitcodes
from tests.e2e.harness import Agent, Hooks
from tests.waiting import process_gone, wait_until

SPOT = "/latest/meta-data/spot/instance-action"
CONFIG = """
confirm = false
[aws]
metadata_url = "@URL@"
timeout = 1.0
max_backoff = 1.0
[aws.spot]
interval = 0.2
[aws.rebalance]
enabled = false
[aws.maintenance]
enabled = false
[aws.asg]
enabled = false
"""


def spot_notice(seconds: float = 90) -> str:
    when = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return json.dumps({"action": "terminate", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")})


def the_record(tmp_path: Path) -> dict[str, Any]:
    (record,) = json.loads((tmp_path / "state" / "state.json").read_text())["notices"].values()
    return record


def test_a_hook_that_could_not_start_is_run_by_the_restart(
    aws_imds: Any, hooks: Hooks, start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    interpreter = tmp_path / "bin" / "sh"  # not there yet: the hook cannot be started
    broken = hooks.add("10-unstartable")
    broken.write_text(broken.read_text().replace("#!/bin/sh", f"#!{interpreter}", 1))
    pid_file = tmp_path / "gated.pid"
    hooks.add("20-gated", body=f'echo $$ > "{pid_file}"\nexec sleep 300\n')
    agent = start_agent("aws", aws_imds.url, CONFIG)
    agent.wait_for_log("watching aws")
    aws_imds.set(SPOT, spot_notice())
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "20-gated")
    record = the_record(tmp_path)["hooks"]["drain"]["10-unstartable"]
    assert record["outcome"] == "error", record
    assert hooks.starts("10-unstartable") == []

    agent.signal(signal.SIGKILL)  # a crash in the middle of the drain
    agent.wait()
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    interpreter.parent.mkdir()
    interpreter.symlink_to("/bin/sh")  # what was missing is back
    hooks.add("20-gated")  # the interrupted hook now finishes at once

    again = start_agent("aws", aws_imds.url, CONFIG)
    assert again.wait() == exitcodes.FINISHED
    again.wait_for_log("resuming the drain")
    assert len(hooks.starts("10-unstartable")) == 1, "the hook that never started runs now"
    assert len(hooks.starts("20-gated")) == 2
    record = the_record(tmp_path)
    assert record["status"] == "drained"
    outcomes = {name: r["outcome"] for name, r in record["hooks"]["drain"].items()}
    assert outcomes == {"10-unstartable": "ok", "20-gated": "ok"}


SEES = """\
old=$(cat "{pid_file}")
if [ -e "/proc/$old" ] && ! grep -q '^State:.*[ZX]' "/proc/$old/status"; then
    echo alive > "{seen}"
else
    echo gone > "{seen}"
fi
"""


def test_a_restart_ends_the_copy_a_crashed_agent_left_running_before_running_it_again(
    aws_imds: Any, hooks: Hooks, start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    pid_file, seen = tmp_path / "slow.pid", tmp_path / "seen"
    hooks.add("10-slow", body=f'echo $$ > "{pid_file}"\nexec sleep 300\n')
    agent = start_agent("aws", aws_imds.url, CONFIG)
    agent.wait_for_log("watching aws")
    aws_imds.set(SPOT, spot_notice())
    left = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "pid"))
    agent.signal(signal.SIGKILL)  # a crash: the hook's process goes on, orphaned
    agent.wait()
    try:
        assert not process_gone(left)
        hooks.add("10-slow", body=SEES.format(pid_file=pid_file, seen=seen))

        again = start_agent("aws", aws_imds.url, CONFIG)
        assert again.wait() == exitcodes.FINISHED
        again.wait_for_log("ended what was left of hook 10-slow")
        assert seen.read_text().strip() == "gone", "the copy was ended before the re-run"
        assert process_gone(left)
        assert len(hooks.starts("10-slow")) == 2
    finally:
        if not process_gone(left):
            os.kill(left, signal.SIGKILL)
