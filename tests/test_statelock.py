"""One agent per state directory: the second says who holds it and exits 6 (real agents)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import exitcodes, mock, statelock
from agent.clouds.aws import mock as aws_mock
from tests.e2e.harness import Agent, write_config


@pytest.fixture
def aws_imds() -> Iterator[mock.MockMetadataServer]:
    with mock.MockMetadataServer(aws_mock.FLAVOR) as server:
        aws_mock.defaults(server)
        yield server


@pytest.fixture
def config(tmp_path: Path, aws_imds: mock.MockMetadataServer) -> Iterator[Path]:
    (tmp_path / "hooks.d").mkdir(mode=0o755)
    extra = '[aws]\nmetadata_url = "@URL@"\n'
    yield write_config(tmp_path / "agent.toml", "aws", aws_imds.url, tmp_path, extra)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.close()


def start(agents: list[Agent], config: Path) -> Agent:
    agent = Agent(config)
    agents.append(agent)
    return agent


def test_a_second_agent_on_the_same_state_dir_says_who_holds_it_and_exits_6(
    config: Path, tmp_path: Path, agents: list[Agent]
) -> None:
    first = start(agents, config)
    first.wait_for_log("watching aws")
    assert (tmp_path / "state" / "lock").read_text() == f"{first.proc.pid}\n"
    second = start(agents, config)
    assert second.wait() == exitcodes.ALREADY_RUNNING
    record = second.wait_for_log("already runs")
    assert f"held by pid {first.proc.pid}" in record["message"]
    assert first.proc.poll() is None, "the first one goes on"
    assert (tmp_path / "state" / "lock").read_text() == f"{first.proc.pid}\n", "pid kept"
    first.signal(signal.SIGTERM)
    assert first.wait() == exitcodes.FINISHED
    third = start(agents, config)
    third.wait_for_log("watching aws")


def test_a_killed_agent_leaves_no_stale_lock(config: Path, agents: list[Agent]) -> None:
    first = start(agents, config)
    first.wait_for_log("watching aws")
    first.proc.kill()
    first.wait()
    second = start(agents, config)
    second.wait_for_log("watching aws")


def test_the_lock_in_one_process(tmp_path: Path) -> None:
    held = statelock.acquire(tmp_path / "state")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    with pytest.raises(statelock.AlreadyRunning) as caught:
        statelock.acquire(tmp_path / "state")
    assert caught.value.pid == os.getpid()
    # Nothing the agent starts inherits the lock (it would outlive a crash in a hook).
    fds = subprocess.run(
        ["ls", "-l", "/proc/self/fd/"], capture_output=True, text=True, close_fds=False, check=True
    ).stdout
    assert str(tmp_path / "state" / "lock") not in fds
    held.release()
    statelock.acquire(tmp_path / "state").release()
