"""The real agent process against a mock ECS metadata service in hardened mode, with real hooks."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from agent import exitcodes, mock
from agent.clouds.alibaba import mock as alibaba_mock
from tests.e2e.harness import GUARD_DIR, REPO, Agent, Hooks
from tests.waiting import wait_until

TERMINATION_TIME = "/latest/meta-data/instance/spot/termination-time"
INSTANCE_ID = "/latest/meta-data/instance-id"
REGION_ID = "/latest/meta-data/region-id"
INSTANCE = "i-bp13znx0m0me8cquu0001"
EVENT = f"alibaba:{INSTANCE}:spot-interruption"
INTERVAL = 0.5
FAST = f"""
[alibaba]
metadata_url = "@URL@"
timeout = 1.0
max_backoff = 1.0
@EXTRA@
[alibaba.spot]
interval = {INTERVAL}
"""

StartAgent = Callable[..., Agent]


def fast(extra: str = "") -> str:
    return FAST.replace("@EXTRA@", extra)


@pytest.fixture
def ecs() -> Iterator[mock.MockMetadataServer]:
    with mock.MockMetadataServer(alibaba_mock.FLAVOR) as server:
        alibaba_mock.defaults(server, instance_id=INSTANCE)
        yield server


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def notify(server: mock.MockMetadataServer, seconds: float) -> tuple[float, datetime]:
    """Make a release notice appear now; return (wall time it appeared, its deadline)."""
    deadline = in_seconds(seconds)
    appeared = time.time()
    server.set(TERMINATION_TIME, mock.rfc3339(deadline))
    return appeared, deadline


def polls(server: mock.MockMetadataServer) -> int:
    return sum(1 for r in server.requests if r.path == TERMINATION_TIME)


def warnings(agent: Agent) -> list[str]:
    return [
        r["message"]
        for r in agent.records()
        if r.get("level") == "warning" and "alibaba-spot:" in r.get("message", "")
    ]


def test_notice_runs_hook_once_with_its_variables_and_exits_finished(
    ecs: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-drain")
    agent = start_agent("alibaba", ecs.url, fast())
    agent.wait_for_log("watching alibaba")
    appeared, deadline = notify(ecs, 60)

    assert agent.wait() == exitcodes.FINISHED
    starts = hooks.starts("10-drain")
    assert len(starts) == 1
    assert starts[0] - appeared <= 2 * INTERVAL, "hook must start within two poll intervals"
    env = hooks.env("10-drain")
    assert env["PREEMPT_PROVIDER"] == "alibaba"
    assert env["PREEMPT_KIND"] == "spot-interruption"
    assert env["PREEMPT_ACTION"] == "terminate"
    assert env["PREEMPT_INSTANCE_ID"] == INSTANCE
    assert env["PREEMPT_DEADLINE"] == mock.rfc3339(deadline)
    assert 55 <= int(env["PREEMPT_SECONDS_LEFT"]) <= 60
    assert env["PREEMPT_EVENT_ID"] == EVENT
    assert env["PREEMPT_DRY_RUN"] == "0"
    assert hooks.arg("10-drain") == "drain"
    notice = hooks.stdin("10-drain")
    assert notice["provider"] == "alibaba"
    assert notice["raw"] == mock.rfc3339(deadline)
    finished = agent.wait_for_log(f"drain of {EVENT} finished")
    assert finished["outcome"] == "drained"


def test_hardened_mode_token_on_every_get_and_identity_read_once(
    ecs: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-drain")
    agent = start_agent("alibaba", ecs.url, fast("token_ttl = 600"))
    agent.wait_for_log("watching alibaba")
    wait_until(lambda: polls(ecs) >= 4, 10, "several polls")
    watching = ecs.requests
    puts = [r for r in watching if r.method == "PUT"]
    assert len(puts) == 1, "the token is cached, not fetched per poll"
    assert puts[0].headers[alibaba_mock.FLAVOR.ttl_header] == "600"
    assert sum(1 for r in watching if r.path == INSTANCE_ID) == 1
    assert sum(1 for r in watching if r.path == REGION_ID) == 1
    notify(ecs, 60)
    assert agent.wait() == exitcodes.FINISHED
    gets = [r for r in ecs.requests if r.method == "GET"]
    assert all(r.headers.get(alibaba_mock.FLAVOR.token_header) for r in gets), "hardened mode"
    assert sum(1 for r in gets if r.path == INSTANCE_ID) == 1, "read once for the whole run"
    assert sum(1 for r in gets if r.path == REGION_ID) == 1
    assert "cn-hangzhou" in " ".join(agent.messages())


def test_stop_behaviour_is_the_hooks_action(
    ecs: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-drain")
    agent = start_agent("alibaba", ecs.url, fast('interruption_behavior = "stop"'))
    agent.wait_for_log("watching alibaba")
    notify(ecs, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert hooks.env("10-drain")["PREEMPT_ACTION"] == "stop"


def test_a_time_that_moves_on_every_poll_is_one_interruption(
    ecs: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-slow", body="sleep 2")
    ecs.set_dynamic(TERMINATION_TIME, lambda: mock.rfc3339(in_seconds(60)))
    agent = start_agent("alibaba", ecs.url, fast())
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-slow")) == 1
    assert polls(ecs) >= 3, "the agent kept polling while the hook ran"


def test_refused_connections_at_start_then_recovery(
    ecs: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-drain")
    ecs.refuse()
    agent = start_agent("alibaba", ecs.url, fast())
    warning = agent.wait_for_log("alibaba-spot:")
    assert warning["level"] == "warning"
    assert "ConnectionError" in warning["message"]
    ecs.accept()
    agent.wait_for_log("metadata answers again")
    notify(ecs, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1


@pytest.mark.parametrize(
    "bursts",
    [
        [(2, 502, {}), (2, 503, {}), (2, 429, {"Retry-After": "1"}), (2, 403, {})],
        [(4, 403, {})],
    ],
    ids=["5xx-429-403", "403"],
)
def test_5xx_429_and_403_bursts_are_survived(
    ecs: mock.MockMetadataServer,
    hooks: Hooks,
    start_agent: StartAgent,
    bursts: list[tuple[int, int, dict[str, Any]]],
) -> None:
    hooks.add("10-drain")
    total = 0
    for count, status, headers in bursts:
        ecs.fail(count, status, headers)
        total += count
    agent = start_agent("alibaba", ecs.url, fast())
    agent.wait_for_log("alibaba-spot:")
    wait_until(lambda: len(ecs.requests) > total, 20, "the bursts to be used up")
    agent.wait_for_log("metadata answers again")
    assert hooks.starts("10-drain") == [], "a failure never starts a drain"
    appeared, _ = notify(ecs, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1
    assert hooks.starts("10-drain")[0] - appeared <= 2 * INTERVAL
    seen = warnings(agent)
    for _, status, _ in bursts:
        assert len([w for w in seen if f"answered {status}" in w]) <= 2, seen


def test_refused_token_requests_are_retried_never_tokenless(
    ecs: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-drain")
    ecs.token_endpoint_status = 403
    agent = start_agent("alibaba", ecs.url, fast())
    agent.wait_for_log("token request answered 403")
    wait_until(lambda: sum(1 for r in ecs.requests if r.method == "PUT") >= 3, 10, "token retries")
    assert all(r.method == "PUT" for r in ecs.requests), "no GET without a token"
    ecs.token_endpoint_status = None
    agent.wait_for_log("metadata answers again")
    notify(ecs, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1
    gets = [r for r in ecs.requests if r.method == "GET"]
    assert all(r.headers.get(alibaba_mock.FLAVOR.token_header) for r in gets)
    assert not [m for m in agent.messages() if "without a session token" in m]


def test_expired_token_is_renewed(
    ecs: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-drain")
    agent = start_agent("alibaba", ecs.url, fast())
    agent.wait_for_log("watching alibaba")
    wait_until(lambda: polls(ecs) >= 1, 5, "a first poll")
    ecs.expire_tokens()
    wait_until(lambda: sum(1 for r in ecs.requests if r.method == "PUT") == 2, 5, "a renewed token")
    start = polls(ecs)
    wait_until(lambda: polls(ecs) >= start + 2, 5, "polls with the new token")
    assert sum(1 for r in ecs.requests if r.method == "PUT") == 2, "renewed once, then cached"
    assert not warnings(agent), "a renewal is routine, not a failure"
    notify(ecs, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1


def test_empty_garbage_and_stale_bodies_never_drain(
    ecs: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-drain")
    ecs.set(TERMINATION_TIME, "")
    agent = start_agent("alibaba", ecs.url, fast())
    agent.wait_for_log("watching alibaba")
    wait_until(lambda: polls(ecs) >= 3, 10, "polls of an empty body")
    assert not warnings(agent), "an empty body is no notice and no error"
    ecs.set(TERMINATION_TIME, "<html>maintenance</html>")
    agent.wait_for_log("is not a time")
    ecs.set(TERMINATION_TIME, "2015-01-05T18:02:00Z")
    agent.wait_for_log("is long past")
    start = polls(ecs)
    wait_until(lambda: polls(ecs) >= start + 2, 15, "more polls")
    assert hooks.starts("10-drain") == []
    assert agent.proc.poll() is None
    notify(ecs, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1
    assert len([w for w in warnings(agent) if "is not a time" in w]) == 1


def test_check_reports_alibaba_from_dmi(tmp_path: Path) -> None:
    """``check`` on an ECS-like sysfs names the file that said so, with no network."""
    sysfs = tmp_path / "sys"
    (sysfs / "class" / "dmi" / "id").mkdir(parents=True)
    (sysfs / "class" / "dmi" / "id" / "product_name").write_text("Alibaba Cloud ECS\n")
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir(mode=0o755)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'sysfs_root = "{sysfs}"\nhooks_dir = "{hooks_dir}"\nprobe_metadata = false\n'
        f'state_dir = "{tmp_path / "state"}"\nplugins = false\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "check"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": f"{GUARD_DIR}:{REPO}", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == exitcodes.FINISHED, result.stdout + result.stderr
    expected = f"detected alibaba from {sysfs}/class/dmi/id/product_name='Alibaba Cloud ECS'"
    assert expected in result.stdout
    assert "NETWORK GUARD" not in result.stderr
