"""The real agent process: a notice's time cannot stretch the agent's work without bound, and
the agent's own margins cannot skip every hook.

A notice dated ten years ahead, confirmed against an EC2 API that never confirms, ends
within ``max_run_time`` + ``confirm_grace``. Margins as large as the notice window, and a
notice whose time is already past (a clock running ahead), still run the hooks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from agent import exitcodes
from tests.e2e.harness import Agent, Hooks, write_config
from tests.fakes.hostile_metadata import HostileMetadata, Reply

SPOT = "/latest/meta-data/spot/instance-action"
INTERVAL = 0.2
SLACK = 3.0
"""Process start-up (boto3's import included), a poll or two, scheduling noise."""
EC2_UNAVAILABLE = """<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>Unavailable</Code><Message>try later</Message></Error></Errors>\
<RequestID>5ec0a1e5-0000-4000-8000-000000000000</RequestID></Response>"""


def config(extra: str = "", endpoint: str = "") -> str:
    return f"""
{extra}
[aws]
metadata_url = "@URL@"
{f'endpoint_url = "{endpoint}"' if endpoint else ""}
timeout = 1.0
max_backoff = 1.0
[aws.spot]
interval = {INTERVAL}
[aws.rebalance]
enabled = false
[aws.maintenance]
enabled = false
[aws.asg]
enabled = false
"""


def at(seconds: float) -> str:
    when = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def spot_notice(seconds: float) -> str:
    return json.dumps({"action": "terminate", "time": at(seconds)})


def the_record(tmp_path: Path) -> dict[str, Any]:
    (record,) = json.loads((tmp_path / "state" / "state.json").read_text())["notices"].values()
    return record


@pytest.fixture
def ec2() -> Iterator[HostileMetadata]:
    """An EC2 API that answers every call "Unavailable": it never confirms anything."""
    with HostileMetadata() as fake:
        fake.set("/", Reply(503, EC2_UNAVAILABLE, [("Content-Type", "text/xml")]), "POST")
        yield fake


@pytest.fixture
def margins_agent(tmp_path: Path) -> Iterator[Callable[[str, str], Agent]]:
    """``margins_agent(url, extra)``: the agent with the harness's own margins replaced."""
    started: list[Agent] = []

    def start(url: str, extra: str) -> Agent:
        path = write_config(tmp_path / "agent.toml", "aws", url, tmp_path, config())
        text = path.read_text().replace("safety_margin = 2\n", "").replace("kill_grace = 1\n", "")
        path.write_text(extra + "\n" + text)
        agent = Agent(path)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


# -- defect 8: confirmation is bounded by max_run_time ----------------------------------------


def test_a_notice_ten_years_ahead_confirms_for_at_most_max_run_time_plus_the_grace(
    aws_imds: Any,
    ec2: HostileMetadata,
    hooks: Hooks,
    start_agent: Callable[..., Agent],
    tmp_path: Path,
) -> None:
    max_run_time, grace = 3.0, 1.0
    hooks.add("10-drain")
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00",
        "AWS_SECRET_ACCESS_KEY": "e2e-secret",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
    }
    extra = f"max_run_time = {max_run_time}\nconfirm_grace = {grace}"
    agent = start_agent("aws", aws_imds.url, config(extra, ec2.url), env=env)
    agent.wait_for_log("watching aws")
    appeared = time.monotonic()
    aws_imds.set(SPOT, spot_notice(10 * 365.25 * 86400))

    assert agent.wait(max_run_time + grace + SLACK + 10) == exitcodes.NOT_CONFIRMED
    took = time.monotonic() - appeared
    assert took <= max_run_time + grace + SLACK, f"notice to exit took {took:.1f} s"
    assert len(hooks.starts("10-drain")) == 1
    assert ec2.seen("/", "POST"), "the EC2 API was asked"
    budget = agent.wait_for_log("API (for up to")["message"]
    said = float(budget.rsplit("for up to ", 1)[1].split()[0])
    assert said <= max_run_time + grace, budget
    assert the_record(tmp_path)["status"] == "not-confirmed"


# -- risks: settings that would make every hook skip -----------------------------------------


def test_margins_larger_than_the_notice_window_still_run_the_hook(
    aws_imds: Any, hooks: Hooks, margins_agent: Callable[[str, str], Agent], tmp_path: Path
) -> None:
    hooks.add("10-drain")
    hooks.add("20-flush")
    agent = margins_agent(aws_imds.url, "confirm = false\nsafety_margin = 200\nkill_grace = 200")
    agent.wait_for_log("watching aws")
    aws_imds.set(SPOT, spot_notice(120))

    assert agent.wait() == exitcodes.FINISHED
    for name in ("10-drain", "20-flush"):
        assert len(hooks.starts(name)) == 1, f"{name} was skipped"
        assert int(hooks.env(name)["PREEMPT_HOOK_TIMEOUT"]) > 0
    record = the_record(tmp_path)
    assert record["status"] == "drained"
    outcomes = {name: r["outcome"] for name, r in record["hooks"]["drain"].items()}
    assert outcomes == {"10-drain": "ok", "20-flush": "ok"}


def test_a_notice_whose_time_is_already_past_still_runs_the_hook(
    aws_imds: Any, hooks: Hooks, start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    hooks.add("10-drain")
    agent = start_agent("aws", aws_imds.url, config("confirm = false"))
    agent.wait_for_log("watching aws")
    aws_imds.set(SPOT, spot_notice(-60))  # as a VM whose clock runs a minute fast sees it

    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1, "the hook was skipped"
    left = int(hooks.env("10-drain")["PREEMPT_SECONDS_LEFT"])
    assert 20 <= left <= 30, f"hooks are told the {left} s they get"
    agent.wait_for_log("already past")
    assert the_record(tmp_path)["status"] == "drained"
