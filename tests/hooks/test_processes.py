"""Ending a hook's process group that an earlier agent process left running (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.hooks.processes import kill_leftover, members
from agent.hooks.runner import kill_leftover as exported
from tests.waiting import process_gone, wait_until

EVENT = "aws:i-0123456789abcdef0:spot-interruption"

EARLIER_AGENT = """\
import os, subprocess, sys
event, hook = sys.argv[1], sys.argv[2]
env = dict(os.environ, PREEMPT_EVENT_ID=event) if event else dict(os.environ)
proc = subprocess.Popen(
    ["/bin/sh", "-c", hook], env=env, start_new_session=True,
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
)
print(proc.pid, flush=True)
os._exit(0)  # dies as an agent killed mid-drain would: the hook is orphaned, still running
"""


def orphaned_hook(out: Path, body: str, event: str = EVENT) -> int:
    """Start a hook from a process that then dies; return the hook's process group id."""
    pgid = int(
        subprocess.run(
            [sys.executable, "-c", EARLIER_AGENT, event, body],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    )
    wait_until((out / "ready").exists, 10, "the orphaned hook to be ready")
    return pgid


def pids(out: Path) -> list[int]:
    return [int(x) for x in (out / "pids").read_text().split()]


HOOK = (
    'sleep 60 & echo $! >> "{out}/pids"; '
    '(trap "" TERM; while :; do sleep 0.05; done) & echo $! >> "{out}/pids"; '
    'echo $$ >> "{out}/pids"; touch "{out}/ready"; wait'
)


def test_a_group_left_for_this_event_is_ended(tmp_path: Path) -> None:
    pgid = orphaned_hook(tmp_path, HOOK.format(out=tmp_path))
    assert pgid in pids(tmp_path)
    assert kill_leftover(pgid, EVENT, grace=0.2)
    assert all(process_gone(pid) for pid in pids(tmp_path)), "gone when it returns"
    assert members(pgid) == []
    assert not kill_leftover(pgid, EVENT, grace=0.2), "nothing left the second time"


def test_a_group_whose_leader_exited_is_found_through_what_is_left(tmp_path: Path) -> None:
    body = f'sleep 60 & echo $! > "{tmp_path}/pids"; touch "{tmp_path}/ready"'
    pgid = orphaned_hook(tmp_path, body)
    wait_until(lambda: process_gone(pgid), 10, "the leader to exit")
    assert kill_leftover(pgid, EVENT, grace=1.0)
    assert all(process_gone(pid) for pid in pids(tmp_path))


@pytest.mark.parametrize("event", ["aws:i-0123456789abcdef0:other-event", ""])
def test_a_group_that_is_not_this_events_hook_is_left_alone(tmp_path: Path, event: str) -> None:
    """A recorded group id may belong to something else by now (pid reuse)."""
    pgid = orphaned_hook(tmp_path, HOOK.format(out=tmp_path), event)
    try:
        assert not kill_leftover(pgid, EVENT, grace=0.2)
        assert not any(process_gone(pid) for pid in pids(tmp_path))
    finally:
        os.killpg(pgid, 9)


def test_nothing_to_end(tmp_path: Path) -> None:
    assert not kill_leftover(os.getpgrp(), EVENT), "never the agent's own group"
    done = subprocess.run(["true"], check=True)
    assert done.returncode == 0
    assert not kill_leftover(2**22 + 12345, EVENT)
    assert exported is kill_leftover
