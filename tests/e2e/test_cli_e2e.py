"""The command line as a user runs it: unsupported clouds, check, simulate, --version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent import __version__, exitcodes
from tests.e2e.harness import GUARD_DIR, GUARD_MARK, REPO, Hooks


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "--log-format", "text", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": f"{GUARD_DIR}:{REPO}", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert GUARD_MARK not in result.stderr
    return result


def config_for(tmp_path: Path, dmi: dict[str, str], extra: str = "") -> Path:
    """provider = auto on a fake sysfs, probing off: detection can only read these files."""
    dmi_dir = tmp_path / "sys" / "class" / "dmi" / "id"
    dmi_dir.mkdir(parents=True, exist_ok=True)
    for name, value in dmi.items():
        (dmi_dir / name).write_text(value + "\n")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'sysfs_root = "{tmp_path / "sys"}"\nprobe_metadata = false\nplugins = false\n'
        f'hooks_dir = "{tmp_path / "hooks.d"}"\nstate_dir = "{tmp_path / "state"}"\n' + extra
    )
    return config


@pytest.mark.parametrize(
    ("dmi", "said"),
    [
        ({}, "no cloud was detected"),
        ({"chassis_asset_tag": "OracleCloud.com"}, "this is oracle"),
        ({"sys_vendor": "Amazon EC2", "product_name": "Alibaba Cloud ECS"}, "conflicting evidence"),
    ],
)
def test_run_without_a_watchable_cloud_says_so_and_exits_5(tmp_path: Path, dmi, said) -> None:
    result = cli(config_for(tmp_path, dmi), "run")
    assert result.returncode == exitcodes.UNSUPPORTED
    assert said in result.stderr
    assert "nothing to do" in result.stderr


def test_check_prints_the_cloud_its_evidence_and_the_plan(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path / "hooks.d", tmp_path / "out")
    hooks.add("10-drain")
    hooks.add("20-rebalance", header="# preempt-agent: kinds=rebalance-recommendation resume=yes")
    config = config_for(tmp_path, {"sys_vendor": "Amazon EC2"})
    result = cli(config, "check")
    assert result.returncode == exitcodes.FINISHED, result.stdout + result.stderr
    assert "detected aws from" in result.stdout and "sys_vendor='Amazon EC2'" in result.stdout
    assert "spot-interruption: 10-drain" in result.stdout
    assert "rebalance-recommendation: 20-rebalance" in result.stdout
    assert "resume: 20-rebalance" in result.stdout


def test_check_fails_on_a_refused_hook_and_names_it(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path / "hooks.d", tmp_path / "out")
    hooks.add("10-drain").chmod(0o777)
    result = cli(config_for(tmp_path, {"sys_vendor": "Amazon EC2"}), "check")
    assert result.returncode == exitcodes.CHECK_FAILED
    assert "REFUSED 10-drain: writable by group or others" in result.stdout


def test_check_names_a_bad_key(tmp_path: Path) -> None:
    config = config_for(tmp_path, {}, "[aws]\nmetadata_ulr = 'http://127.0.0.1:9'\n")
    result = cli(config, "check")
    assert result.returncode == exitcodes.CONFIG
    assert "aws.metadata_ulr: unknown setting" in result.stdout


def test_simulate_runs_hooks_now_as_a_dry_run(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path / "hooks.d", tmp_path / "out")
    hooks.add("10-drain")
    hooks.add("20-fails", body="exit 3")
    config = config_for(tmp_path, {}, 'provider = "aws"\n')
    result = cli(config, "simulate", "--seconds", "60")
    assert result.returncode == exitcodes.FAILURE, "a failing hook makes simulate fail"
    assert "10-drain: ok" in result.stdout and "20-fails: failed" in result.stdout
    env = hooks.env("10-drain")
    assert env["PREEMPT_DRY_RUN"] == "1"
    assert env["PREEMPT_KIND"] == "spot-interruption"
    assert 55 <= int(env["PREEMPT_SECONDS_LEFT"]) <= 60


def test_version(tmp_path: Path) -> None:
    result = cli(tmp_path / "unused.toml", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"preempt-agent {__version__}"


def test_check_fails_on_a_missing_hooks_folder(tmp_path: Path) -> None:
    result = cli(config_for(tmp_path, {"sys_vendor": "Amazon EC2"}), "check")
    assert result.returncode == exitcodes.CHECK_FAILED
    assert (
        f"MISSING {tmp_path / 'hooks.d'}: the folder does not exist; no hook script will run"
        in result.stdout
    )


def test_check_fails_on_files_that_never_run_for_their_names(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path / "hooks.d", tmp_path / "out")
    hooks.add("10-drain")
    hooks.add("10-drain.dpkg-old")
    hooks.add("20 flush")
    result = cli(config_for(tmp_path, {"sys_vendor": "Amazon EC2"}), "check")
    assert result.returncode == exitcodes.CHECK_FAILED
    assert "spot-interruption: 10-drain\n" in result.stdout
    assert "SKIPPED 10-drain.dpkg-old: never runs: a backup or package-manager leftover" in (
        result.stdout
    )
    assert "SKIPPED 20 flush: never runs: not a hook name" in result.stdout


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            "safety_margin = 20\nkill_grace = 10\n",
            "a 30 s notice leaves hooks 0 s: safety_margin 20 s + kill_grace 10 s = 30 s of it; "
            "at least 5 s must be left",
        ),
        (
            "safety_margin = 114\nkill_grace = 2\n",
            "a 120 s notice leaves hooks 4 s",
        ),
        ("max_run_time = 12\n", "max_run_time = 12 s leaves hooks 0 s"),
        ("hook_timeout = 0.2\n", "hook_timeout = 0.2 s kills every hook"),
    ],
)
def test_check_refuses_settings_that_cannot_fit_a_short_notice(
    tmp_path: Path, settings: str, said: str
) -> None:
    Hooks(tmp_path / "hooks.d", tmp_path / "out").add("10-drain")
    result = cli(config_for(tmp_path, {"sys_vendor": "Amazon EC2"}, settings), "check")
    assert result.returncode == exitcodes.CHECK_FAILED, result.stdout
    assert f"REFUSED settings: {said}" in result.stdout


def test_check_says_how_much_time_hooks_get(tmp_path: Path) -> None:
    Hooks(tmp_path / "hooks.d", tmp_path / "out").add("10-drain")
    result = cli(config_for(tmp_path, {"sys_vendor": "Amazon EC2"}), "check")
    assert result.returncode == exitcodes.FINISHED, result.stdout
    assert "settings: hooks get 105 s of 120 s, 15 s of 30 s" in result.stdout
