"""The real agent process against the Azure Scheduled Events mock on loopback."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from agent import exitcodes
from agent.clouds.azure.mock import EVENTS_PATH, AzureMockServer, defaults, event, rfc1123
from agent.mock import rfc3339
from tests.waiting import wait_until

VM = "vm-spot"
CONFIG = """
confirm = false
[azure]
metadata_url = "@URL@"
timeout = 1.0
max_backoff = 1.0
[azure.events]
interval = 0.2
"""


@pytest.fixture
def azure() -> Iterator[AzureMockServer]:
    with AzureMockServer() as server:
        defaults(server, VM)
        yield server


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def polls(server) -> int:
    return len([r for r in server.requests if r.path == EVENTS_PATH and r.method == "GET"])


def test_a_preempt_drains_once_with_its_variables_and_not_before(azure, hooks, start_agent):
    hooks.add("10-drain")
    agent = start_agent("azure", azure.url, CONFIG)
    agent.wait_for_log("Scheduled Events answered")
    deadline = in_seconds(40)
    item = event("Preempt", [VM], deadline)
    azure.add_event(item)

    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1
    env = hooks.env("10-drain")
    assert env["PREEMPT_PROVIDER"] == "azure"
    assert env["PREEMPT_KIND"] == "spot-interruption"
    assert env["PREEMPT_ACTION"] == "preempt"
    assert env["PREEMPT_INSTANCE_ID"] == VM
    assert env["PREEMPT_EVENT_ID"] == f"azure:{VM}:spot-interruption:{item['EventId']}"
    assert env["PREEMPT_DEADLINE"] == rfc3339(deadline)
    assert item["NotBefore"] == rfc1123(deadline)
    requests = azure.requests
    assert requests and all(r.headers.get("Metadata") == "true" for r in requests)


def test_the_drained_event_is_approved(azure, hooks, start_agent):
    hooks.add("10-drain")
    agent = start_agent("azure", azure.url, CONFIG)
    agent.wait_for_log("Scheduled Events answered")
    item = event("Preempt", [VM], in_seconds(40))
    azure.add_event(item)
    assert agent.wait() == exitcodes.FINISHED
    assert azure.approved == [item["EventId"]]
    agent.wait_for_log(f"approved scheduled event {item['EventId']}")


def test_no_approval_when_turned_off(azure, hooks, start_agent):
    hooks.add("10-drain")
    agent = start_agent(
        "azure", azure.url, CONFIG.replace("[azure]\n", "[azure]\napprove = false\n")
    )
    agent.wait_for_log("Scheduled Events answered")
    azure.add_event(event("Preempt", [VM], in_seconds(40)))
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1
    assert azure.approved == []


def test_an_event_for_another_vm_is_ignored(azure, hooks, start_agent):
    hooks.add("10-drain", header="# preempt-agent: kinds=all")
    azure.add_event(event("Preempt", ["vm-other"], in_seconds(40)))
    azure.add_event(event("Freeze", ["vm-third", "vm-fourth"], in_seconds(900)))
    agent = start_agent("azure", azure.url, CONFIG)
    agent.wait_for_log("Scheduled Events answered")
    seen = polls(azure)
    wait_until(lambda: polls(azure) >= seen + 5, 10, "five more polls")
    assert hooks.starts("10-drain") == []
    assert azure.approved == []
    agent.signal(signal.SIGTERM)
    assert agent.wait() == exitcodes.FINISHED


def test_a_cancelled_event_runs_the_resume_hooks(azure, hooks, start_agent):
    hooks.add("10-maint", header="# preempt-agent: kinds=scheduled-maintenance resume=yes")
    agent = start_agent("azure", azure.url, CONFIG.replace("confirm = false", ""))
    agent.wait_for_log("Scheduled Events answered")
    item = event("Reboot", [VM], in_seconds(900))
    azure.add_event(item)
    agent.wait_for_log(f"{item['EventId']} over")
    assert len(hooks.starts("10-maint")) == 1
    assert hooks.env("10-maint")["PREEMPT_ACTION"] == "reboot"
    azure.cancel(item["EventId"])
    wait_until(lambda: len(hooks.starts("10-maint")) == 2, 10, "the resume hooks")
    wait_until(lambda: hooks.arg("10-maint") == "resume", 5, "the resume phase")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == exitcodes.FINISHED


def test_a_slow_first_answer_is_start_up_not_a_failure(azure, hooks, start_agent):
    azure.first_call_delay = 2.0  # the real service: up to two minutes
    agent = start_agent("azure", azure.url, CONFIG)
    agent.wait_for_log("Scheduled Events answered")
    assert not [r for r in agent.records() if r.get("level") in ("warning", "error")]
    agent.signal(signal.SIGTERM)
    assert agent.wait() == exitcodes.FINISHED
