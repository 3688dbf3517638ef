"""The real agent process against a metadata service that misbehaves on purpose.

Slow bodies, redirects, compressed bombs, huge bodies, control characters in fields and
absurd ``Retry-After`` values: the agent keeps watching, drains real notices on time,
drains nothing from a broken answer, and stays small.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from agent import exitcodes
from tests.e2e.harness import Agent, Hooks, write_config
from tests.fakes.hostile_metadata import (
    SPOT,
    TOKEN_PATH,
    HostileMetadata,
    Reply,
    Seen,
    gzip_bomb,
    huge,
    redirect,
    retry_after,
    spot_action,
    trickled,
)
from tests.waiting import wait_until

REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
INSTANCE = "i-0123456789abcdef0"
EVENT_ID = f"aws:{INSTANCE}:spot-interruption"
TIMEOUT = 1.0
"""The agent's bound on one metadata request."""
MAX_BACKOFF = 1.0
INTERVAL = 0.2
SLACK = 1.5
"""Process start-up, a poll interval or two, scheduling noise on a busy machine."""
CONFIG = f"""
confirm = false
[aws]
metadata_url = "@URL@"
timeout = {TIMEOUT}
max_backoff = {MAX_BACKOFF}
[aws.spot]
interval = {INTERVAL}
[aws.rebalance]
interval = {INTERVAL}
[aws.maintenance]
enabled = false
[aws.asg]
enabled = false
"""
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR)\s+\S")


@pytest.fixture
def imds() -> Iterator[HostileMetadata]:
    with HostileMetadata() as fake:
        fake.aws(INSTANCE)
        yield fake


@pytest.fixture
def elsewhere() -> Iterator[HostileMetadata]:
    """Another host, where a redirect points: it must never be asked anything."""
    with HostileMetadata("127.0.0.2") as fake:
        fake.set(SPOT, Reply(200, spot_action("terminate", soon(60))))
        fake.set(TOKEN_PATH, Reply(200, "stolen-token"), "PUT")
        yield fake


@pytest.fixture
def hooks(tmp_path: Path) -> Hooks:
    return Hooks(tmp_path / "hooks.d", tmp_path / "out")


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(url: str, args: tuple[str, ...] = ()) -> Agent:
        config = write_config(tmp_path / "agent.toml", "aws", url, tmp_path, CONFIG)
        agent = Agent(config, args=args)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


def soon(seconds: float) -> str:
    when = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def polls(fake: HostileMetadata, path: str, count: int, timeout: float = 10.0) -> None:
    wait_until(lambda: len(fake.seen(path)) >= count, timeout, f"{count} requests to {path}")


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# -- a slow answer holds nothing up beyond the request bound ------------------------------------


def test_a_trickled_body_does_not_delay_another_watchers_notice(imds, hooks, agents):
    hooks.add("10-drain")
    imds.set(REBALANCE, trickled(json.dumps({"noticeTime": soon(0)}) * 50, every=1.0))
    agent = agents(imds.url)
    agent.wait_for_log("watching aws")
    polls(imds, REBALANCE, 1)
    appeared = time.time()
    imds.set(SPOT, Reply(200, spot_action("terminate", soon(60))))

    started = wait_until(lambda: hooks.starts("10-drain"), TIMEOUT + SLACK + 2, "the hook")
    assert started[0] - appeared <= TIMEOUT + SLACK, "a slow answer held the spot watcher back"
    assert agent.wait() == exitcodes.FINISHED


def test_a_trickled_body_does_not_delay_the_exit_beyond_the_request_bound(imds, agents):
    imds.set(SPOT, trickled(b"x" * 1000, every=1.0))
    imds.set(REBALANCE, trickled(b"x" * 1000, every=1.0))
    agent = agents(imds.url)
    agent.wait_for_log("watching aws")
    polls(imds, SPOT, 1)
    asked = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait(TIMEOUT + SLACK + 5) == exitcodes.FINISHED
    assert time.monotonic() - asked <= TIMEOUT + SLACK


def test_a_server_that_never_answers_fails_each_poll_at_the_bound(imds, hooks, agents):
    hooks.add("10-drain")
    imds.set(SPOT, Reply(hang=True))
    agent = agents(imds.url)
    agent.wait_for_log("watching aws")
    polls(imds, SPOT, 2, timeout=2 * TIMEOUT + MAX_BACKOFF + SLACK + 3)
    appeared = time.time()
    imds.set(SPOT, Reply(200, spot_action("terminate", soon(60))))
    started = wait_until(lambda: hooks.starts("10-drain"), 10, "the hook")
    assert started[0] - appeared <= TIMEOUT + MAX_BACKOFF + SLACK
    assert agent.wait() == exitcodes.FINISHED


# -- redirects ----------------------------------------------------------------------------------


def test_a_redirect_on_the_spot_path_is_not_followed_and_drains_nothing(
    imds, elsewhere, hooks, agents
):
    hooks.add("10-drain")
    imds.set(SPOT, redirect(f"{elsewhere.url}{SPOT}?token=leak", 302))
    agent = agents(imds.url)
    agent.wait_for_log("watching aws")
    polls(imds, SPOT, 4)
    line = agent.wait_for_log("not followed")
    assert f"redirected to {elsewhere.url}{SPOT}" in line["message"]
    assert "leak" not in line["message"]
    assert hooks.starts("10-drain") == []
    assert elsewhere.requests == [], "the other host was contacted"
    said = [m for m in agent.messages() if "not followed" in m]
    assert len(said) == 1, f"a redirect is logged once, not per poll: {said}"

    imds.set(SPOT, Reply(200, spot_action("stop", soon(60))))
    assert agent.wait() == exitcodes.FINISHED
    assert hooks.env("10-drain")["PREEMPT_ACTION"] == "stop"
    assert elsewhere.requests == []


def test_a_redirect_on_the_token_put_never_sends_anything_elsewhere(imds, elsewhere, hooks, agents):
    hooks.add("10-drain")
    imds.set(TOKEN_PATH, redirect(f"{elsewhere.url}{TOKEN_PATH}", 307), "PUT")
    imds.set(SPOT, Reply(200, spot_action("terminate", soon(60))))
    agent = agents(imds.url)
    agent.wait_for_log("not followed")
    polls(imds, TOKEN_PATH, 2)
    assert elsewhere.requests == []
    assert hooks.starts("10-drain") == [], "nothing may be read without a token"
    assert not any(r.headers.get("X-aws-ec2-metadata-token") for r in imds.requests)

    imds.set(TOKEN_PATH, Reply(200, "hostile-token"), "PUT")
    assert agent.wait() == exitcodes.FINISHED
    assert elsewhere.requests == []


# -- bodies that would eat memory ---------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [gzip_bomb(100 << 20), huge(50 << 20, declare=False), huge(50 << 20)],
    ids=["gzip-bomb", "50MB-until-close", "50MB-declared"],
)
def test_a_bomb_or_a_huge_body_keeps_the_agent_small_and_drains_nothing(imds, hooks, agents, reply):
    hooks.add("10-drain")
    agent = agents(imds.url)
    agent.wait_for_log("watching aws")
    before = peak_rss_kib(agent.proc.pid)
    imds.set(SPOT, reply)
    polls(imds, SPOT, len(imds.seen(SPOT)) + 3)
    grown = peak_rss_kib(agent.proc.pid) - before
    assert grown < 16 * 1024, f"peak RSS grew by {grown} KiB"
    assert hooks.starts("10-drain") == []
    assert agent.proc.poll() is None
    assert not (hooks.out / "10-drain.starts").exists()


# -- control characters in fields ---------------------------------------------------------------


def test_a_nul_in_the_action_still_drains_with_a_safe_action(imds, hooks, agents, tmp_path):
    hooks.add("10-drain")
    imds.set(SPOT, Reply(200, spot_action("terminate\x00; rm -rf /", soon(60))))
    agent = agents(imds.url)
    assert agent.wait() == exitcodes.FINISHED
    env = hooks.env("10-drain")
    assert env["PREEMPT_ACTION"] == "unknown"
    assert env["PREEMPT_EVENT_ID"] == EVENT_ID
    agent.wait_for_log(f"drain of {EVENT_ID} finished")
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["notices"][EVENT_ID]["status"] == "drained"
    assert state["notices"][EVENT_ID]["notice"]["action"] == "unknown"


def test_a_newline_in_the_action_cannot_forge_a_text_log_line(imds, hooks, agents):
    hooks.add("10-drain", body='echo "action is $PREEMPT_ACTION"')
    forged = "\n2030-01-01T00:00:00 ERROR   FORGED line\r\x1b[2J"
    imds.set(SPOT, Reply(200, spot_action("terminate" + forged, soon(60))))
    imds.set("/latest/meta-data/instance-id", Reply(200, INSTANCE + forged))
    agent = agents(imds.url, ("--log-format", "text"))
    assert agent.wait() == exitcodes.FINISHED
    env = hooks.env("10-drain")
    assert env["PREEMPT_ACTION"] == "unknown"
    assert env["PREEMPT_INSTANCE_ID"].startswith(INSTANCE + "\\x0a2030")
    assert env["PREEMPT_INSTANCE_ID"].isprintable()
    lines = list(agent.lines)
    assert any("action is unknown" in line for line in lines)
    assert any(f"{INSTANCE}\\n2030" in line for line in lines), "the id is logged, escaped"
    for line in lines:
        assert "\x1b" not in line and "\r" not in line and "\x00" not in line, line
        assert not line.startswith("2030-01-01"), f"forged line: {line!r}"
        assert TEXT_LINE.match(line) or line.startswith("  "), f"not a record line: {line!r}"


def test_a_non_string_action_still_drains(imds, hooks, agents):
    hooks.add("10-drain")
    imds.set(SPOT, Reply(200, json.dumps({"action": 7, "time": soon(60)})))
    agent = agents(imds.url)
    assert agent.wait() == exitcodes.FINISHED
    assert hooks.env("10-drain")["PREEMPT_ACTION"] == "unknown"
    assert hooks.env("10-drain")["PREEMPT_KIND"] == "spot-interruption"


def test_the_spot_path_is_polled_while_the_instance_id_cannot_be_read(imds, hooks, agents):
    hooks.add("10-drain")
    imds.set("/latest/meta-data/instance-id", Reply(503, "busy"))
    imds.set(SPOT, Reply(200, spot_action("terminate", soon(60))))
    agent = agents(imds.url)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1
    assert hooks.env("10-drain")["PREEMPT_KIND"] == "spot-interruption"


def test_an_instance_id_that_appears_mid_drain_does_not_make_a_second_event(
    imds, hooks, agents, tmp_path
):
    gate = tmp_path / "gate"
    hooks.add("10-gated", body=f"while [ ! -e {gate} ]; do sleep 0.05; done")
    imds.set("/latest/meta-data/instance-id", Reply(503, "busy"))
    imds.set(SPOT, Reply(200, spot_action("terminate", soon(60))))
    agent = agents(imds.url)
    wait_until(lambda: hooks.starts("10-gated"), 10, "the hook")
    imds.set("/latest/meta-data/instance-id", Reply(200, INSTANCE))
    polls(
        imds, "/latest/meta-data/instance-id", len(imds.seen("/latest/meta-data/instance-id")) + 1
    )
    polls(imds, SPOT, len(imds.seen(SPOT)) + 3)
    gate.touch()
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-gated")) == 1
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert len(state["notices"]) == 1, sorted(state["notices"])


# -- server-requested waits ---------------------------------------------------------------------


def first_then(first: Reply, then: Reply, count: int = 1) -> Callable[[Seen], Reply]:
    """``first`` for the first ``count`` requests, ``then`` after."""
    asked: list[float] = []

    def route(seen: Seen) -> Reply:
        asked.append(seen.time)
        return first if len(asked) <= count else then

    return route


@pytest.mark.parametrize("value", ["99999", "inf"])
def test_retry_after_on_the_token_put_stops_the_spot_watcher_at_most_max_backoff(
    imds, hooks, agents, value
):
    hooks.add("10-drain")
    imds.set(TOKEN_PATH, first_then(retry_after(value), Reply(200, "hostile-token")), "PUT")
    imds.set(SPOT, Reply(200, spot_action("terminate", soon(60))))
    agent = agents(imds.url)
    refused = wait_until(lambda: imds.seen(TOKEN_PATH, "PUT"), 10, "the token request")[0]
    started = wait_until(
        lambda: hooks.starts("10-drain"), MAX_BACKOFF + SLACK + 5, "the hook after the wait"
    )
    waited = started[0] - (time.time() - (time.monotonic() - refused.time))
    assert waited <= MAX_BACKOFF + SLACK, f"the watcher waited {waited:.1f} s"
    assert agent.wait() == exitcodes.FINISHED


@pytest.mark.parametrize("value", ["99999", "inf"])
def test_retry_after_on_the_spot_path_stops_the_spot_watcher_at_most_max_backoff(
    imds, hooks, agents, value
):
    hooks.add("10-drain")
    notice = Reply(200, spot_action("terminate", soon(60)))
    imds.set(SPOT, first_then(retry_after(value), notice))
    agent = agents(imds.url)
    refused = wait_until(lambda: imds.seen(SPOT), 10, "the first spot poll")[0]
    started = wait_until(
        lambda: hooks.starts("10-drain"), MAX_BACKOFF + SLACK + 5, "the hook after the wait"
    )
    waited = started[0] - (time.time() - (time.monotonic() - refused.time))
    assert waited <= MAX_BACKOFF + SLACK, f"the watcher waited {waited:.1f} s"
    assert agent.wait() == exitcodes.FINISHED
