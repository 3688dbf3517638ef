"""The real agent process against a mock IMDSv2 on loopback, with real hook processes."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from agent import exitcodes, mock
from agent.clouds.aws import mock as aws_mock
from tests.waiting import process_gone, wait_until

SPOT = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
INTERVAL = 0.5
# These tests are about watching and draining; the cloud API part is in test_confirm_e2e.py.
FAST = f"""
confirm = false
[aws]
metadata_url = "@URL@"
timeout = 1.0
max_backoff = 1.0
[aws.spot]
interval = {INTERVAL}
[aws.rebalance]
interval = {INTERVAL}
[aws.maintenance]
enabled = false
[aws.asg]
enabled = false
"""


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def notify(
    server: mock.MockMetadataServer, seconds: float, action: str = "terminate"
) -> tuple[float, datetime]:
    """Make a spot notice appear now; return (wall time it appeared, its deadline)."""
    deadline = in_seconds(seconds)
    appeared = time.time()
    server.set(SPOT, aws_mock.spot_action(action, deadline))
    return appeared, deadline


def test_spot_notice_runs_hook_once_with_its_variables_and_exits_finished(
    aws_imds, hooks, start_agent
):
    hooks.add("10-drain")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    appeared, deadline = notify(aws_imds, 60, "stop")

    assert agent.wait() == exitcodes.FINISHED
    starts = hooks.starts("10-drain")
    assert len(starts) == 1
    assert starts[0] - appeared <= 2 * INTERVAL, "hook must start within two poll intervals"
    env = hooks.env("10-drain")
    assert env["PREEMPT_PROVIDER"] == "aws"
    assert env["PREEMPT_KIND"] == "spot-interruption"
    assert env["PREEMPT_ACTION"] == "stop"
    assert env["PREEMPT_INSTANCE_ID"] == "i-0123456789abcdef0"
    assert env["PREEMPT_DEADLINE"] == mock.rfc3339(deadline)
    assert 55 <= int(env["PREEMPT_SECONDS_LEFT"]) <= 60
    assert env["PREEMPT_EVENT_ID"] == "aws:i-0123456789abcdef0:spot-interruption"
    assert env["PREEMPT_DRY_RUN"] == "0"
    assert hooks.arg("10-drain") == "drain"
    notice = hooks.stdin("10-drain")
    assert notice["action"] == "stop" and json.loads(notice["raw"])["action"] == "stop"
    finished = agent.wait_for_log("drain of aws:i-0123456789abcdef0:spot-interruption finished")
    assert finished["outcome"] == "drained"


def test_every_metadata_get_carries_a_token(aws_imds, hooks, start_agent):
    hooks.add("10-drain")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    gets = [r for r in aws_imds.requests if r.method == "GET"]
    assert gets and all(aws_mock.FLAVOR.token_header in r.headers for r in gets)
    puts = [r for r in aws_imds.requests if r.method == "PUT"]
    assert len(puts) == 1, "the token is cached, not fetched per poll"
    assert puts[0].headers[aws_mock.FLAVOR.ttl_header] == "21600"


def test_a_time_that_changes_on_every_poll_is_one_interruption(aws_imds, hooks, start_agent):
    # AWS's own metadata mock rewrites "time" on every answer; that must not re-trigger.
    hooks.add("10-slow", body="sleep 2")
    aws_imds.set_dynamic(SPOT, lambda: aws_mock.spot_action("terminate", in_seconds(60)))
    agent = start_agent("aws", aws_imds.url, FAST)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-slow")) == 1
    polls = [r for r in aws_imds.requests if r.path == SPOT]
    assert len(polls) >= 3, "the agent kept polling while the hook ran"


def test_hanging_hook_is_killed_with_its_children_and_later_hooks_still_run(
    aws_imds, hooks, start_agent, tmp_path
):
    pidfile = tmp_path / "child.pid"
    hooks.add(
        "10-hang",
        header="# preempt-agent: timeout=1",
        body=f"""
        trap '' TERM
        sleep 300 &
        echo $! > {pidfile}
        wait
        """,
    )
    hooks.add("20-after")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("20-after")) == 1
    child = int(pidfile.read_text())
    assert process_gone(child), "the hook's whole process group is killed"
    timeout = agent.wait_for_log("hook 10-hang: timeout")
    assert timeout["hook"] == "10-hang" and timeout["outcome"] == "timeout"


def test_whole_run_ends_before_the_deadline(aws_imds, hooks, start_agent):
    hooks.add("10-forever", body="trap '' TERM; sleep 300")  # holds on to the very end
    hooks.add("20-never-reached")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    _, deadline = notify(aws_imds, 6)
    assert agent.wait() == exitcodes.FINISHED
    ended = datetime.now(timezone.utc)
    assert ended < deadline, f"the run must end before the deadline ({ended} >= {deadline})"
    assert hooks.starts("20-never-reached") == []
    agent.wait_for_log("hook 20-never-reached skipped: no time left")


def test_restart_mid_drain_does_not_rerun_finished_hooks(aws_imds, hooks, start_agent, tmp_path):
    pidfile = tmp_path / "slow.pid"
    hooks.add("10-first")
    hooks.add("20-slow", body=f"echo $$ > {pidfile}; exec sleep 300")
    hooks.add("30-last")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    notify(aws_imds, 90)
    wait_until(lambda: hooks.starts("20-slow"), 10, "the slow hook to start")
    agent.signal(signal.SIGKILL)  # a crash in the middle of the drain
    agent.wait()
    os.kill(
        int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), 5, "pid")), signal.SIGKILL
    )
    hooks.add("20-slow")  # the retried hook now finishes quickly

    again = start_agent("aws", aws_imds.url, FAST)
    assert again.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-first")) == 1, "a finished hook is not run again"
    assert len(hooks.starts("20-slow")) == 2, "the interrupted hook runs again"
    assert len(hooks.starts("30-last")) == 1
    again.wait_for_log("resuming the drain")


def test_sigterm_during_a_drain_lets_the_hooks_finish(aws_imds, hooks, start_agent, tmp_path):
    gate = tmp_path / "gate"
    hooks.add("10-gated", body=f"while [ ! -e {gate} ]; do sleep 0.05; done")
    hooks.add("20-after")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    notify(aws_imds, 60)
    wait_until(lambda: hooks.starts("10-gated"), 10, "the gated hook to start")
    agent.signal(signal.SIGTERM)
    time.sleep(0.3)  # not synchronisation: gives a wrong implementation the chance to quit early
    assert agent.proc.poll() is None
    gate.touch()
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("20-after")) == 1


def test_sigterm_while_idle_exits_finished(aws_imds, start_agent):
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    agent.signal(signal.SIGTERM)
    assert agent.wait() == exitcodes.FINISHED
    agent.wait_for_log("stop requested")


def test_refused_connections_at_boot_do_not_stop_a_later_notice(aws_imds, hooks, start_agent):
    hooks.add("10-drain")
    aws_imds.refuse()
    agent = start_agent("aws", aws_imds.url, FAST)
    warning = agent.wait_for_log("aws-spot:")
    assert warning["level"] == "warning" and "ConnectionError" in warning["message"]
    aws_imds.accept()
    agent.wait_for_log("metadata answers again")
    notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1


def test_5xx_429_and_garbage_are_survived_and_logged_at_a_bounded_rate(
    aws_imds, hooks, start_agent
):
    hooks.add("10-drain")
    aws_imds.fail(6, status=503)
    aws_imds.set(SPOT, "<html>not json{")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("is not JSON")
    aws_imds.fail(2, status=429, headers={"Retry-After": "1"})
    wait_until(lambda: len([r for r in aws_imds.requests if r.path == SPOT]) >= 6, 15, "more polls")
    assert hooks.starts("10-drain") == [], "a garbage body never starts a drain"
    notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    warnings = [
        r["message"]
        for r in agent.records()
        if r.get("level") == "warning" and "aws-spot:" in r["message"]
    ]
    assert len([w for w in warnings if "not JSON" in w]) == 1, (
        "once a minute per kind, not per poll"
    )
    assert len([w for w in warnings if "answered 503" in w]) == 1
    assert len(warnings) <= 3


def test_expired_token_is_renewed(aws_imds, hooks, start_agent):
    hooks.add("10-drain")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    wait_until(lambda: any(r.path == SPOT for r in aws_imds.requests), 5, "a first poll")
    aws_imds.expire_tokens()
    notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len([r for r in aws_imds.requests if r.method == "PUT"]) == 2


def test_imds_without_token_endpoint_falls_back_with_one_warning(hooks, start_agent):
    with mock.MockMetadataServer(aws_mock.FLAVOR, token_required=False) as server:
        aws_mock.defaults(server)
        server.token_endpoint_status = 404
        hooks.add("10-drain")
        agent = start_agent("aws", server.url, FAST)
        agent.wait_for_log("watching aws")
        notify(server, 60)
        assert agent.wait() == exitcodes.FINISHED
    fallbacks = [m for m in agent.messages() if "without a session token" in m]
    assert len(fallbacks) == 1
    assert len(hooks.starts("10-drain")) == 1


def test_rebalance_runs_only_hooks_that_ask_for_it_and_keeps_watching(aws_imds, hooks, start_agent):
    hooks.add("10-default")
    hooks.add(
        "20-rebalance", header="# preempt-agent: kinds=rebalance-recommendation,spot-interruption"
    )
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    aws_imds.set(REBALANCE, '{"noticeTime": "2020-10-27T08:22:00Z"}')
    agent.wait_for_log("drain of aws:i-0123456789abcdef0:rebalance-recommendation finished")
    assert hooks.starts("10-default") == []
    assert len(hooks.starts("20-rebalance")) == 1
    assert hooks.env("20-rebalance")["PREEMPT_KIND"] == "rebalance-recommendation"
    assert agent.proc.poll() is None, "a rebalance recommendation is not a termination"

    notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-default")) == 1
    assert len(hooks.starts("20-rebalance")) == 2


def test_a_termination_cancels_a_running_rebalance_drain(aws_imds, hooks, start_agent):
    hooks.add(
        "10-rebalance",
        header="# preempt-agent: kinds=rebalance-recommendation",
        body="exec sleep 300",
    )
    hooks.add("20-terminate")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("watching aws")
    aws_imds.set(REBALANCE, '{"noticeTime": "2020-10-27T08:22:00Z"}')
    wait_until(lambda: hooks.starts("10-rebalance"), 10, "the rebalance hook to start")
    appeared, _ = notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    started = hooks.starts("20-terminate")
    assert len(started) == 1
    assert started[0] - appeared < 2 * INTERVAL + 1 + 0.5, "within two polls plus the kill grace"


def test_notice_handled_in_an_earlier_boot_does_not_block(aws_imds, hooks, start_agent, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    event = "aws:i-0123456789abcdef0:spot-interruption"
    old = {
        "version": 1,
        "boot_id": "an-earlier-boot",
        "notices": {
            event: {
                "status": "drained",
                "hooks": {},
                "notice": {
                    "provider": "aws",
                    "kind": "spot-interruption",
                    "action": "terminate",
                    "instance_id": "i-0123456789abcdef0",
                    "event_id": event,
                    "deadline": "2020-01-01T00:00:00Z",
                    "raw": "{}",
                    "detected_at": "2020-01-01T00:00:00Z",
                },
            }
        },
    }
    (state / "state.json").write_text(json.dumps(old))
    hooks.add("10-drain")
    agent = start_agent("aws", aws_imds.url, FAST)
    agent.wait_for_log("from an earlier boot")
    notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert len(hooks.starts("10-drain")) == 1


def test_damaged_state_file_is_set_aside_and_the_drain_goes_on(
    aws_imds, hooks, start_agent, tmp_path
):
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text('{"notices": [truncated')
    hooks.add("10-drain")
    agent = start_agent("aws", aws_imds.url, FAST)
    error = agent.wait_for_log("is damaged")
    assert error["level"] == "error"
    notify(aws_imds, 60)
    assert agent.wait() == exitcodes.FINISHED
    assert (state / "state.json.damaged").read_text() == '{"notices": [truncated'
    assert len(hooks.starts("10-drain")) == 1


@pytest.mark.root
def test_full_disk_is_logged_and_hooks_still_run(aws_imds, hooks, start_agent, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    import subprocess

    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(state)], check=True)
    try:
        filler = state / "filler"
        with filler.open("wb") as handle:
            try:
                handle.write(b"x" * 65536)
            except OSError:
                pass
        hooks.add("10-drain")
        hooks.add("20-drain")
        agent = start_agent("aws", aws_imds.url, FAST)
        agent.wait_for_log("watching aws")
        notify(aws_imds, 60)
        assert agent.wait() == exitcodes.FINISHED
        errors = [r for r in agent.records() if "cannot write state file" in r["message"]]
        assert len(errors) == 1 and "No space left" in errors[0]["message"]
        assert len(hooks.starts("10-drain")) == 1 and len(hooks.starts("20-drain")) == 1
    finally:
        subprocess.run(["umount", str(state)], check=False)


def test_bad_config_names_the_key_and_exits_78(aws_imds, start_agent):
    agent = start_agent("aws", aws_imds.url, "[aws.spot]\nintreval = 1\n")
    assert agent.wait() == exitcodes.CONFIG
    assert any("invalid configuration" in m and "intreval" in m for m in agent.messages())
