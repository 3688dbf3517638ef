"""Fixtures for end-to-end tests: a mock metadata service, a hooks folder, the agent process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from agent import mock
from agent.clouds.aws import mock as aws_mock
from tests.e2e.harness import Agent, Hooks, write_config


@pytest.fixture
def aws_imds() -> Iterator[mock.MockMetadataServer]:
    with mock.MockMetadataServer(aws_mock.FLAVOR) as server:
        aws_mock.defaults(server)
        yield server


@pytest.fixture
def hooks(tmp_path: Path) -> Hooks:
    return Hooks(tmp_path / "hooks.d", tmp_path / "out")


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """``start_agent(provider, url, extra_toml)``: starts the agent; all are killed at the end."""
    started: list[Agent] = []

    def start(provider: str, url: str, extra: str = "", env: dict[str, str] | None = None) -> Agent:
        config = write_config(tmp_path / "agent.toml", provider, url, tmp_path, extra)
        agent = Agent(config, env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()
