"""The .rpm from packaging/build.sh: dependencies, scriptlets, config flags, a scratch install."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.packaging.support import PACKAGING, Packages, need, need_root

LIB = "/usr/lib/preempt-agent"


def rpm(*args: str, check: bool = True) -> str:
    need("rpm")
    proc = subprocess.run(["rpm", *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert proc.returncode == 0, f"rpm {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def test_file_name_and_header(packages: Packages) -> None:
    assert packages.rpm.name == f"preempt-agent-{packages.version}-1.noarch.rpm"
    header = rpm(
        "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}", str(packages.rpm)
    )
    assert header.split() == ["preempt-agent", packages.version, "1", "noarch", "Apache-2.0"]


def test_requires(packages: Packages) -> None:
    requires = {line.strip() for line in rpm("-qp", "--requires", str(packages.rpm)).splitlines()}
    assert "python3 >= 3.9" in requires
    assert "python3-requests" in requires
    assert "python3-systemd" in requires, "the Type=notify unit cannot start without it"
    bundled = {"python3-tenacity", "python3-tomli", "python3-aliyun-python-sdk-core"}
    assert not requires & bundled, "bundled libraries must not be required"
    weak = set(rpm("-qp", "--recommends", str(packages.rpm)).split())
    assert {"python3-boto3", "python3-cryptography", "python3-jmespath"} <= weak


def test_scriptlets_are_the_shared_scripts(packages: Packages) -> None:
    scripts = rpm("-qp", "--scripts", str(packages.rpm))
    for header, ours in (
        ("postinstall scriptlet", "postinstall.sh"),
        ("preuninstall scriptlet", "preremove.sh"),
        ("postuninstall scriptlet", "postremove.sh"),
    ):
        assert f"{header} (using /bin/sh):" in scripts
        body = (PACKAGING / "scripts" / ours).read_text().strip()
        assert body in scripts, f"{ours} is not the {header}"
    assert "preinstall scriptlet" not in scripts


def test_config_is_noreplace(packages: Packages) -> None:
    flags = dict(
        reversed(line.split(maxsplit=1))
        for line in rpm(
            "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]", str(packages.rpm)
        ).splitlines()
        if len(line.split()) == 2
    )
    assert flags["/etc/preempt-agent/agent.toml"] == "cn"  # %config(noreplace)
    assert flags["/usr/share/man/man8/preempt-agent.8.gz"] == "d"
    assert flags["/usr/share/licenses/preempt-agent/copyright"] == "l"


@pytest.mark.root
def test_install_into_scratch_root(packages: Packages, tmp_path: Path) -> None:
    """``rpm --root`` without scriptlets (they need a system; the container test runs them)."""
    need_root()
    root = tmp_path / "root"
    root.mkdir()
    common = ["--root", str(root), "--dbpath", "/var/lib/rpm"]
    rpm("-i", *common, "--nodeps", "--noscripts", str(packages.rpm))
    for path, mode in (
        ("/usr/bin/preempt-agent", 0o755),
        (f"{LIB}/agent/cli.py", 0o644),
        (f"{LIB}/vendor/tenacity/__init__.py", 0o644),
        (f"{LIB}/vendor/tomli/__init__.py", 0o644),
        (f"{LIB}/vendor/aliyunsdkecs/__init__.py", 0o644),
        ("/usr/lib/systemd/system/preempt-agent.service", 0o644),
        ("/etc/preempt-agent/agent.toml", 0o644),
        ("/etc/preempt-agent/hooks.d", 0o755),
        ("/usr/share/man/man8/preempt-agent.8.gz", 0o644),
    ):
        target = root / path.lstrip("/")
        assert target.exists(), f"{path} not installed"
        assert target.stat().st_mode & 0o7777 == mode, f"{path}: mode {target.stat().st_mode:o}"
        assert target.stat().st_uid == 0
    assert not (root / "lib/systemd").exists(), "the deb's unit path leaked into the rpm"
    assert not [p for p in root.rglob("*-packages") if p.is_dir()], "nothing in site-packages"
    assert rpm("-q", *common, "--configfiles", "preempt-agent").split() == [
        "/etc/preempt-agent/agent.toml"
    ]
    assert rpm("-V", *common, "--nodeps", "preempt-agent") == "", (
        "installed files differ from the package"
    )

    # A changed config survives an erase as .rpmsave; everything else goes.
    (root / "etc/preempt-agent/agent.toml").write_text('provider = "aws"\n')
    rpm("-e", *common, "--nodeps", "--noscripts", "preempt-agent")
    assert (root / "etc/preempt-agent/agent.toml.rpmsave").exists()
    left = [p for p in (root / "usr").rglob("*") if "preempt-agent" in str(p)]
    assert not left, f"left after erase: {left[:5]}"
    assert os.listdir(root / "etc/preempt-agent") == ["agent.toml.rpmsave"]
