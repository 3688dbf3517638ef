"""The real agent process gets the signals a service can get: those that are fatal by
default but ask for nothing (SIGHUP from a closed terminal or a reload, SIGUSR1/SIGUSR2 from
a tool) are logged and ignored, mid-drain and while idle; only SIGTERM and SIGINT stop it.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from agent import exitcodes
from tests.e2e.harness import Agent, Hooks
from tests.waiting import process_gone, wait_until

SPOT = "/latest/meta-data/spot/instance-action"
IGNORED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
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


def spot_notice(seconds: float = 60) -> str:
    when = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return json.dumps({"action": "terminate", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")})


def the_record(tmp_path: Path) -> dict[str, Any]:
    (record,) = json.loads((tmp_path / "state" / "state.json").read_text())["notices"].values()
    return record


def ignored_each(agent: Agent, signals: tuple[signal.Signals, ...]) -> None:
    """Send each signal and wait until the agent says it ignored it."""
    for sig in signals:
        agent.signal(sig)
        agent.wait_for_log(f"{sig.name} received: ignored")


def test_signals_mid_drain_leave_the_running_hook_and_the_rest_of_the_drain_alone(
    aws_imds: Any, hooks: Hooks, start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    hooks.add(
        "10-gated",
        body=f'echo $$ > "{hooks.out}/10-gated.pid"\nwhile [ ! -e {gate} ]; do sleep 0.05; done\n',
    )
    hooks.add("20-after")
    agent = start_agent("aws", aws_imds.url, CONFIG)
    agent.wait_for_log("watching aws")
    aws_imds.set(SPOT, spot_notice())
    pid_file = hooks.out / "10-gated.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "the hook")
    hook_pid = int(pid_file.read_text())

    ignored_each(agent, IGNORED)
    assert agent.proc.poll() is None, "the agent goes on"
    assert not process_gone(hook_pid), "the running hook goes on"
    assert os.getpgid(hook_pid) == hook_pid, "still its own group, under the same agent"
    assert the_record(tmp_path)["status"] == "draining"

    gate.touch()
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-gated")) == 1 and len(hooks.starts("20-after")) == 1
    record = the_record(tmp_path)
    assert record["status"] == "drained"
    outcomes = {name: r["outcome"] for name, r in record["hooks"]["drain"].items()}
    assert outcomes == {"10-gated": "ok", "20-after": "ok"}
    agent.wait_for_log("drain of ")


@pytest.mark.parametrize("sig", IGNORED, ids=lambda s: s.name)
def test_an_idle_agent_survives_the_signal_and_still_drains_a_later_notice(
    aws_imds: Any,
    hooks: Hooks,
    start_agent: Callable[..., Agent],
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    hooks.add("10-drain")
    agent = start_agent("aws", aws_imds.url, CONFIG)
    agent.wait_for_log("watching aws")
    ignored_each(agent, (sig, sig))
    assert agent.proc.poll() is None

    aws_imds.set(SPOT, spot_notice())
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1
    assert the_record(tmp_path)["status"] == "drained"


def test_sigterm_still_stops_an_agent_that_ignored_a_sighup(
    aws_imds: Any, start_agent: Callable[..., Agent]
) -> None:
    agent = start_agent("aws", aws_imds.url, CONFIG)
    agent.wait_for_log("watching aws")
    ignored_each(agent, (signal.SIGHUP,))
    agent.signal(signal.SIGTERM)
    assert agent.wait() == exitcodes.FINISHED
