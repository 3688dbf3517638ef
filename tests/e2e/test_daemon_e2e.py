"""The real agent process in the daemon's harder cases: failures, hibernation, two
terminations at once, an upgrade under a running agent, and simulate matching the daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from agent import exitcodes, mock
from agent.clouds.aws import mock as aws_mock
from tests.e2e.harness import GUARD_DIR, REPO, Agent, Hooks, write_config
from tests.e2e.test_cli_e2e import cli, config_for
from tests.waiting import wait_until

SPOT = "/latest/meta-data/spot/instance-action"
ASG = "/latest/meta-data/autoscaling/target-lifecycle-state"
SPOT_ID = "aws:i-0123456789abcdef0:spot-interruption"
INTERVAL = 0.5
StartAgent = Callable[..., Agent]


def watchers(asg: bool = False, confirm: bool = False, endpoint: str = "") -> str:
    return f"""
confirm = {"true" if confirm else "false"}
[aws]
metadata_url = "@URL@"
timeout = 1.0
max_backoff = 1.0
{f'endpoint_url = "{endpoint}"' if endpoint else ""}
[aws.spot]
interval = {INTERVAL}
[aws.rebalance]
enabled = false
[aws.maintenance]
enabled = false
[aws.asg]
enabled = {"true" if asg else "false"}
interval = {INTERVAL}
"""


def in_seconds(seconds: float) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).replace(microsecond=0)


def spot_notice(server: mock.MockMetadataServer, seconds: float, action: str = "terminate") -> None:
    server.set(SPOT, aws_mock.spot_action(action, in_seconds(seconds)))


def recording(hooks: Hooks, name: str, calls: Path, header: str = "", body: str = "") -> None:
    """A hook that appends ``name phase`` to one shared file, to see the order."""
    hooks.add(name, header=header, body=f'echo "{name} $1" >> "{calls}"\n' + textwrap.dedent(body))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- failures ----------------------------------------------------------------------------------


def test_a_plugin_listing_that_fails_costs_the_drain_no_script(
    aws_imds: mock.MockMetadataServer, hooks: Hooks, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    info = site / "preempt_agent_damaged-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: preempt_agent_damaged\nVersion: 1.0\n"
    )
    # Any installed distribution with damaged entry points breaks the listing of them all.
    (info / "entry_points.txt").write_text("[preempt_agent.hooks]\nnot an entry point\n")
    hooks.add("10-drain")
    config = write_config(tmp_path / "agent.toml", "aws", aws_imds.url, tmp_path, watchers())
    config.write_text(config.read_text().replace("plugins = false", "plugins = true"))
    agent = Agent(config, {"PYTHONPATH": os.pathsep.join([str(GUARD_DIR), str(REPO), str(site)])})
    try:
        agent.wait_for_log("watching aws")
        spot_notice(aws_imds, 60)
        assert agent.wait() == exitcodes.FINISHED
        assert len(hooks.starts("10-drain")) == 1, "the scripts still run"
        refused = agent.wait_for_log("refusing hook plugins")
        assert refused["level"] == "error" and "cannot list hooks" in refused["message"]
    finally:
        agent.close()


# -- hibernation -------------------------------------------------------------------------------


def test_hibernate_resumes_in_the_same_boot_and_a_later_notice_drains_again(
    aws_imds: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    recording(hooks, "10-stop-work", calls, header="# preempt-agent: resume=yes")
    recording(hooks, "20-flush", calls)
    agent = start_agent("aws", aws_imds.url, watchers())
    agent.wait_for_log("watching aws")
    spot_notice(aws_imds, 60, "hibernate")
    agent.wait_for_log("the instance hibernates", timeout=15)
    assert lines(calls) == ["10-stop-work drain", "20-flush drain"]
    polls = len([r for r in aws_imds.requests if r.path == SPOT])
    wait_until(
        lambda: len([r for r in aws_imds.requests if r.path == SPOT]) > polls + 2, 10, "polls"
    )
    assert agent.proc.poll() is None, "the instance comes back in this boot"

    aws_imds.set(SPOT, None)  # resumed from hibernation: the notice is gone
    agent.wait_for_log("watching again", timeout=10)
    assert lines(calls)[2:] == ["10-stop-work resume"]
    assert hooks.env("10-stop-work")["PREEMPT_PHASE"] == "resume"
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["notices"] == {}

    spot_notice(aws_imds, 60)  # a later interruption in the same boot
    assert agent.wait() == exitcodes.FINISHED
    assert lines(calls)[3:] == ["10-stop-work drain", "20-flush drain"]


# -- a second termination during a termination drain -------------------------------------------


def test_an_earlier_spot_deadline_cuts_a_running_asg_drain(
    aws_imds: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent
) -> None:
    hooks.add("10-hang", body="trap '' TERM; sleep 300")  # holds on to the very end
    hooks.add("20-spot-only", header="# preempt-agent: kinds=spot-interruption")
    agent = start_agent("aws", aws_imds.url, watchers(asg=True))
    agent.wait_for_log("watching aws")
    aws_imds.set(ASG, "Terminated")  # no deadline: bounded by max_run_time (600 s)
    wait_until(lambda: hooks.starts("10-hang"), 10, "the hanging hook to start")
    deadline = in_seconds(8)
    aws_imds.set(SPOT, aws_mock.spot_action("terminate", deadline))
    assert agent.wait(timeout=30) == exitcodes.FINISHED
    assert datetime.now(timezone.utc) < deadline, "the run ends before the spot deadline"
    agent.wait_for_log("hook 10-hang: timeout")
    # The spot drain's own window is what is left before its deadline: the agent's margins
    # never cost its hook its turn.
    assert hooks.starts("20-spot-only"), "the spot hook runs with what is left"


def test_a_spot_notice_during_an_asg_drain_runs_its_own_hooks_before_the_end(
    aws_imds: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent, tmp_path: Path
) -> None:
    calls, gate = tmp_path / "calls", tmp_path / "gate"
    recording(hooks, "10-both", calls, body=f"while [ ! -e {gate} ]; do sleep 0.05; done")
    recording(hooks, "20-asg-only", calls, header="# preempt-agent: kinds=asg-termination")
    recording(hooks, "30-spot-only", calls, header="# preempt-agent: kinds=spot-interruption")
    agent = start_agent("aws", aws_imds.url, watchers(asg=True))
    agent.wait_for_log("watching aws")
    aws_imds.set(ASG, "Terminated")
    wait_until(lambda: hooks.starts("10-both"), 10, "the first hook to start")
    spot_notice(aws_imds, 60)
    agent.wait_for_log("arrived during the asg-termination drain")
    gate.touch()
    assert agent.wait() == exitcodes.FINISHED
    assert lines(calls) == ["10-both drain", "20-asg-only drain", "30-spot-only drain"]
    assert hooks.env("30-spot-only")["PREEMPT_KIND"] == "spot-interruption"
    assert 50 <= int(hooks.env("30-spot-only")["PREEMPT_SECONDS_LEFT"]) <= 60


# -- an upgrade under the running agent --------------------------------------------------------

HALF_UPGRADED = (
    "hooks/scripts.py",
    "hooks/plugins.py",
    "confirmation.py",
    "clouds/aws/api.py",
)


def test_modules_replaced_while_the_agent_runs_do_not_break_a_drain(
    aws_imds: mock.MockMetadataServer,
    hooks: Hooks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed = tmp_path / "installed"
    shutil.copytree(
        REPO / "agent", installed / "agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.chdir(tmp_path)  # python -m puts the working folder first on the path
    hooks.add("10-drain")
    extra = watchers(confirm=True, endpoint="http://127.0.0.1:9")
    config = write_config(tmp_path / "agent.toml", "aws", aws_imds.url, tmp_path, extra)
    agent = Agent(
        config,
        {
            "PYTHONPATH": os.pathsep.join([str(GUARD_DIR), str(installed)]),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
        },
    )
    try:
        agent.wait_for_log("watching aws")
        for name in HALF_UPGRADED:  # dpkg unpacking the next version
            (installed / "agent" / name).write_text('raise ImportError("half-upgraded")\n')
        for cache in (installed / "agent").rglob("__pycache__"):
            shutil.rmtree(cache)
        spot_notice(aws_imds, 60)
        code = agent.wait()
        assert len(hooks.starts("10-drain")) == 1, agent.dump()
        # Confirmation runs (no credentials here, so the notice alone ends the run).
        agent.wait_for_log("cannot be confirmed through the aws API")
        assert code == exitcodes.FINISHED
        assert "half-upgraded" not in agent.dump()
    finally:
        agent.close()


def test_preload_imports_the_api_module_but_no_sdk() -> None:
    code = textwrap.dedent("""
        import sys
        from agent import clouds
        for cloud in ("aws", "alibaba"):
            clouds.get(cloud).preload()
        loaded = sorted(m for m in sys.modules if m.startswith(("boto", "aliyun")))
        print(loaded, "agent.clouds.aws.api" in sys.modules,
              "agent.clouds.alibaba.api" in sys.modules,
              "agent.confirmation" in sys.modules)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": f"{GUARD_DIR}:{REPO}", "PATH": os.environ["PATH"]},
        check=True,
    )
    assert result.stdout.split() == ["[]", "True", "True", "True"]


# -- simulate runs what the daemon would --------------------------------------------------------


def test_simulate_bounds_hooks_as_the_daemon_does(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path / "hooks.d", tmp_path / "out")
    hooks.add("10-drain", header="# preempt-agent: resume=yes")
    settings = 'provider = "aws"\nmax_run_time = 30\nsafety_margin = 5\nkill_grace = 1\n'
    config = config_for(tmp_path, {}, settings)
    result = cli(config, "simulate", "--seconds", "1000")
    assert result.returncode == exitcodes.FINISHED, result.stdout + result.stderr
    env = hooks.env("10-drain")
    assert 990 <= int(env["PREEMPT_SECONDS_LEFT"]) <= 1000, "hooks are told the real deadline"
    # max_run_time, less the safety margin, less the kill grace the runner keeps
    assert 22 <= int(env["PREEMPT_HOOK_TIMEOUT"]) <= 24

    result = cli(config, "simulate", "--phase", "resume", "--seconds", "60")
    assert result.returncode == exitcodes.FINISHED, result.stdout + result.stderr
    env = hooks.env("10-drain")
    assert env["PREEMPT_PHASE"] == "resume"
    assert 27 <= int(env["PREEMPT_HOOK_TIMEOUT"]) <= 29, "a resume has max_run_time"


# -- a SIGKILL mid-resume ----------------------------------------------------------------------


def test_sigkill_during_a_resume_ends_the_left_hook_and_the_restart_finishes_the_resume(
    aws_imds: mock.MockMetadataServer, hooks: Hooks, start_agent: StartAgent, tmp_path: Path
) -> None:
    calls, gate = tmp_path / "calls", tmp_path / "gate"
    recording(hooks, "10-first", calls, header="# preempt-agent: resume=yes")
    recording(
        hooks,
        "20-stuck",
        calls,
        header="# preempt-agent: resume=yes",
        body=f'[ "$1" = resume ] && while [ ! -e "{gate}" ]; do sleep 0.05; done\nexit 0\n',
    )
    agent = start_agent("aws", aws_imds.url, watchers())
    agent.wait_for_log("watching aws")
    spot_notice(aws_imds, 60, "hibernate")
    agent.wait_for_log("the instance hibernates", timeout=15)
    aws_imds.set(SPOT, None)  # back: the resume starts, last hook first
    wait_until(lambda: lines(calls)[-1:] == ["20-stuck resume"], 10, "the stuck resume hook")
    agent.signal(signal.SIGKILL)
    agent.wait(5)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    (record,) = state["notices"].values()
    assert record["status"] == "resuming" and record["running"]["hook"] == "20-stuck"

    again = start_agent("aws", aws_imds.url, watchers())
    again.wait_for_log("ended what was left of hook 20-stuck", timeout=15)
    wait_until(lambda: lines(calls).count("20-stuck resume") == 2, 10, "20-stuck taken up again")
    gate.touch()
    again.wait_for_log("watching again", timeout=15)
    assert lines(calls)[2:] == ["20-stuck resume", "20-stuck resume", "10-first resume"]
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["notices"] == {}
    assert again.proc.poll() is None, "it keeps watching"
