"""The real agent process against the GCP mock (hanging GETs) on loopback."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from agent import exitcodes
from agent.clouds.gcp.mock import MAINTENANCE_PATH, PREEMPTED_PATH, GcpMockServer, defaults
from agent.mock import Flavor, MockMetadataServer
from tests.waiting import wait_until

INSTANCE = "4520031799277581759"
CONFIG = """
confirm = false
[gcp]
metadata_url = "@URL@"
timeout = 1.0
max_backoff = 1.0
wait_seconds = 30
"""


@pytest.fixture
def gcp() -> Iterator[GcpMockServer]:
    with GcpMockServer() as server:
        defaults(server, instance_id=INSTANCE)
        yield server


def hanging(server) -> None:
    """Wait until both watchers have a hanging GET in flight."""
    for path in (PREEMPTED_PATH, MAINTENANCE_PATH):
        server.wait_for_request(lambda r, p=path: r.path == p and "wait_for_change" in r.query, 10)


def test_preemption_drains_once_within_a_round_trip(gcp, hooks, start_agent):
    hooks.add("10-drain")
    agent = start_agent("gcp", gcp.url, CONFIG)
    agent.wait_for_log("watching gcp")
    hanging(gcp)
    appeared = time.time()
    gcp.set(PREEMPTED_PATH, "TRUE")

    assert agent.wait() == exitcodes.FINISHED
    starts = hooks.starts("10-drain")
    assert len(starts) == 1
    assert starts[0] - appeared < 1.0, "a hanging GET brings the notice at once"
    env = hooks.env("10-drain")
    assert env["PREEMPT_PROVIDER"] == "gcp"
    assert env["PREEMPT_KIND"] == "spot-interruption"
    assert env["PREEMPT_ACTION"] == "terminate"
    assert env["PREEMPT_INSTANCE_ID"] == INSTANCE
    assert env["PREEMPT_EVENT_ID"] == f"gcp:{INSTANCE}:spot-interruption"
    assert 25 <= int(env["PREEMPT_SECONDS_LEFT"]) <= 30, "seen + notice_seconds (30)"
    gets = [r for r in gcp.requests if r.method == "GET"]
    assert gets and all(r.headers.get("Metadata-Flavor") == "Google" for r in gets)


def test_already_preempted_at_start_drains_at_once(gcp, hooks, start_agent):
    hooks.add("10-drain")
    gcp.set(PREEMPTED_PATH, "TRUE")
    agent = start_agent("gcp", gcp.url, CONFIG)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1


def test_the_idle_agent_sends_one_request_per_key_per_wait(gcp, start_agent):
    agent = start_agent("gcp", gcp.url, CONFIG.replace("wait_seconds = 30", "wait_seconds = 1"))
    agent.wait_for_log("watching gcp")
    hanging(gcp)
    start = len(gcp.requests)
    time.sleep(2.5)  # not synchronisation: counts what an idle agent asks in this time
    polls = [r for r in gcp.requests[start:] if r.path == PREEMPTED_PATH]
    assert 1 <= len(polls) <= 4
    agent.signal(signal.SIGTERM)
    assert agent.wait() == exitcodes.FINISHED


def test_maintenance_is_advisory_and_its_end_runs_the_resume_hooks(gcp, hooks, start_agent):
    hooks.add("10-maint", header="# preempt-agent: kinds=scheduled-maintenance resume=yes")
    agent = start_agent("gcp", gcp.url, CONFIG)
    agent.wait_for_log("watching gcp")
    hanging(gcp)
    gcp.set(MAINTENANCE_PATH, "MIGRATE_ON_HOST_MAINTENANCE")
    # The migration comes (and ends) after the drain.
    agent.wait_for_log("scheduled-maintenance:MIGRATE_ON_HOST_MAINTENANCE over")
    assert len(hooks.starts("10-maint")) == 1
    assert hooks.env("10-maint")["PREEMPT_ACTION"] == "migrate"
    assert hooks.arg("10-maint") == "drain"
    gcp.set(MAINTENANCE_PATH, "NONE")
    wait_until(lambda: len(hooks.starts("10-maint")) == 2, 10, "the resume hooks")
    wait_until(lambda: hooks.arg("10-maint") == "resume", 5, "the resume phase")
    assert agent.proc.poll() is None, "advisory: the agent keeps watching"
    agent.signal(signal.SIGTERM)
    assert agent.wait() == exitcodes.FINISHED


def test_an_impostor_without_the_flavor_header_starts_no_drain(hooks, start_agent):
    with MockMetadataServer(Flavor("impostor", ttl_header=None, token_header=None)) as server:
        defaults(server, instance_id=INSTANCE)
        server.set(PREEMPTED_PATH, "TRUE")
        hooks.add("10-drain")
        agent = start_agent("gcp", server.url, CONFIG)
        warning = agent.wait_for_log("not the GCP metadata server")
        assert warning["level"] == "warning"
        agent.signal(signal.SIGTERM)
        assert agent.wait() == exitcodes.FINISHED
        assert hooks.starts("10-drain") == []
