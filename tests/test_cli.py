"""The command line as people type it: global options before or after the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import exitcodes
from tests.e2e.harness import GUARD_DIR, GUARD_MARK, REPO, Hooks

COMMANDS = ("run", "check", "simulate", "status")


def agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": f"{GUARD_DIR}:{REPO}", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert GUARD_MARK not in result.stderr
    return result


def both_orders(command: str, *options: str) -> list[list[str]]:
    """``OPTIONS COMMAND`` and ``COMMAND OPTIONS``."""
    return [[*options, command], [command, *options]]


def no_cloud_config(tmp_path: Path, extra: str = "") -> Path:
    """Nothing to watch (an empty fake sysfs, no probing): `run` exits 5 at once."""
    (tmp_path / "sys").mkdir(exist_ok=True)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'sysfs_root = "{tmp_path / "sys"}"\nprobe_metadata = false\nplugins = false\n'
        f'hooks_dir = "{tmp_path / "hooks.d"}"\nstate_dir = "{tmp_path / "state"}"\n' + extra
    )
    return config


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_config_is_read_before_or_after_the_command(
    tmp_path: Path, command: str, after: bool
) -> None:
    config = no_cloud_config(tmp_path, "saftey_margin = 3\n")  # a typo: proves it was read
    result = agent(*both_orders(command, "--config", str(config))[after])
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert f"{config}: saftey_margin: unknown setting" in result.stdout + result.stderr


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_log_format_before_or_after_the_command(tmp_path: Path, after: bool) -> None:
    config = no_cloud_config(tmp_path)
    args = both_orders("run", "--config", str(config), "--log-format", "json")[after]
    result = agent(*args)
    assert result.returncode == exitcodes.UNSUPPORTED, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert any("no cloud was detected" in r["message"] for r in records)


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_log_level_before_or_after_the_command(tmp_path: Path, after: bool) -> None:
    """The config says errors only; --log-level info overrides it from either side."""
    Hooks(tmp_path / "hooks.d", tmp_path / "out").add("10-drain")
    config = no_cloud_config(tmp_path, 'provider = "aws"\nlog_level = "error"\n')
    quiet = agent("--config", str(config), "simulate")
    assert "hook 10-drain: started" not in quiet.stderr
    args = both_orders("simulate", "--config", str(config), "--log-level", "info")[after]
    result = agent(*args)
    assert result.returncode == exitcodes.FINISHED, result.stderr
    assert "hook 10-drain: started" in result.stderr


def test_an_option_after_the_command_wins_over_one_before(tmp_path: Path) -> None:
    good = no_cloud_config(tmp_path)
    bad = tmp_path / "missing.toml"
    result = agent("--config", str(bad), "check", "--config", str(good))
    assert "config: " in result.stdout and "no such file" not in result.stdout
    result = agent("--config", str(good), "check", "--config", str(bad))
    assert result.returncode == exitcodes.CONFIG
    assert f"{bad}: no such file" in result.stdout


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_demo_takes_the_log_level_on_either_side(after: bool) -> None:
    """The demo's hooks see PREEMPT_DRY_RUN=1, as the README says."""
    result = agent(*both_orders("demo", "--log-level", "info")[after], "--lead", "1", timeout=90)
    assert result.returncode == exitcodes.FINISHED, result.stdout + result.stderr
    assert "dry run: 1" in result.stdout
    assert "run --dry-run" in result.stdout


def test_dry_run_is_hidden_and_only_for_run() -> None:
    assert "--dry-run" not in agent("run", "--help").stdout
    assert agent("check", "--dry-run").returncode == exitcodes.USAGE


def actions_config(tmp_path: Path) -> Path:
    hooks = Hooks(tmp_path / "hooks.d", tmp_path / "out")
    hooks.add("10-drain")
    config = tmp_path / "agent.toml"
    config.write_text(
        'provider = "aws"\nprobe_metadata = false\nplugins = false\n'
        f'hooks_dir = "{tmp_path / "hooks.d"}"\nstate_dir = "{tmp_path / "state"}"\n'
        '[aws.elb]\ntarget_groups = ["arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/w/1"]\n'
        '[aws.asg]\nlifecycle_hook = "drain"\n'
    )
    return config


def test_check_lists_the_built_in_actions(tmp_path: Path) -> None:
    result = agent("check", "--config", str(actions_config(tmp_path)))
    assert result.returncode == exitcodes.FINISHED, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    elb = next(line for line in lines if line.strip().startswith("aws-elb"))
    assert "before the hooks" in elb and "targetgroup/w/1" in elb
    assert any("aws-asg-lifecycle" in line and "after the hooks" in line for line in lines)


def test_simulate_runs_actions_and_hooks_in_the_daemons_order_without_any_api(
    tmp_path: Path,
) -> None:
    result = agent("simulate", "--config", str(actions_config(tmp_path)))
    assert result.returncode == exitcodes.FINISHED, result.stdout + result.stderr
    steps = [
        line.split(":")[0] if not line.startswith("action:") else line.split(": ")[0]
        for line in result.stdout.splitlines()
    ]
    assert steps == ["action:aws-elb", "10-drain", "action:aws-asg-lifecycle"]
    assert "dry run: would deregister i-simulated" in result.stdout
    assert not (tmp_path / "state" / "state.json").exists(), "simulate writes no state"
