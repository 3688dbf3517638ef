"""Helpers shared by the packaging tests: paths, tool checks, building the packages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "preempt-agent.service"
BUILD = PACKAGING / "build.sh"
BUILD_TIMEOUT = 600


def source_version() -> str:
    text = (REPO / "agent" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, "agent/__init__.py has no __version__"
    return match.group(1)


def need(*tools: str) -> None:
    """Skip the calling test when one of ``tools`` is not on PATH, naming it."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@dataclass(frozen=True)
class Packages:
    version: str
    deb: Path
    rpm: Path


def build_packages(dist: Path, version: str, *formats: str) -> Packages:
    """Run packaging/build.sh into ``dist``; fail with its output when it fails."""
    env = dict(os.environ, DIST_DIR=str(dist), PREEMPT_VERSION=version)
    proc = subprocess.run(
        ["bash", str(BUILD), *formats],
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, f"build.sh failed ({proc.returncode}):\n{proc.stderr}"
    return Packages(
        version=version,
        deb=dist / f"preempt-agent_{version}_all.deb",
        rpm=dist / f"preempt-agent-{version}-1.noarch.rpm",
    )
