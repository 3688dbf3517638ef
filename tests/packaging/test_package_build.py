"""The .deb from packaging/build.sh: metadata, layout, scripts, the launcher, lintian, rpmlint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.support import PACKAGING, Packages, need

LIB = "/usr/lib/preempt-agent"
VENDORED = ("tenacity", "tomli", "aliyunsdkcore", "aliyunsdkecs")
# Shipped by the distributions, declared as dependencies, never bundled.
FROM_DISTRO = ("requests", "urllib3", "boto3", "botocore", "systemd", "cryptography", "jmespath")


def dpkg_deb(*args: str) -> str:
    need("dpkg-deb")
    return subprocess.run(
        ["dpkg-deb", *args], capture_output=True, text=True, timeout=60, check=True
    ).stdout


def deb_paths(deb: Path) -> list[str]:
    return [line.split()[-1].lstrip(".") for line in dpkg_deb("-c", str(deb)).splitlines()]


def test_file_name_and_control(packages: Packages) -> None:
    assert packages.deb.name == f"preempt-agent_{packages.version}_all.deb"
    field = dict(
        line.split(": ", 1)
        for line in dpkg_deb("-f", str(packages.deb)).splitlines()
        if ": " in line and not line.startswith(" ")
    )
    assert field["Package"] == "preempt-agent"
    assert field["Version"] == packages.version
    assert field["Architecture"] == "all"
    depends = [d.strip() for d in field["Depends"].split(",")]
    assert "python3 (>= 3.9)" in depends
    assert "python3-requests" in depends
    assert "python3-systemd" in depends, "the Type=notify unit cannot start without it"
    recommends = [d.strip() for d in field["Recommends"].split(",")]
    assert {"python3-boto3", "python3-cryptography", "python3-jmespath"} <= set(recommends)


def test_layout(packages: Packages) -> None:
    paths = deb_paths(packages.deb)
    for expected in (
        "/usr/bin/preempt-agent",
        f"{LIB}/agent/__init__.py",
        f"{LIB}/agent/cli.py",
        "/lib/systemd/system/preempt-agent.service",
        "/etc/preempt-agent/agent.toml",
        "/etc/preempt-agent/hooks.d/",
        "/usr/share/man/man8/preempt-agent.8.gz",
        "/usr/share/doc/preempt-agent/copyright",
        "/usr/share/doc/preempt-agent/examples/hardening.conf.example",
        "/usr/share/doc/preempt-agent/examples/hooks.d/10-log-notice",
        "/usr/share/doc/preempt-agent/examples/hooks.d/50-stop-services",
    ):
        assert expected in paths, f"{expected} missing from the .deb"
    for name in VENDORED:
        assert f"{LIB}/vendor/{name}/__init__.py" in paths, f"{name} is not vendored"
    for name in FROM_DISTRO:
        assert f"{LIB}/vendor/{name}/" not in paths, f"{name} must come from the distribution"
    bad = [
        p
        for p in paths
        if "__pycache__" in p
        or p.endswith((".pyc", ".so"))
        or "-packages/" in p
        or "/usr/lib/systemd/system/" in p
    ]
    assert not bad, f"unwanted files: {bad[:10]}"
    hooks = [p for p in paths if p.startswith("/etc/preempt-agent/hooks.d/") and p[-1] != "/"]
    assert not hooks, "hooks.d must ship empty"


def test_conffiles_and_scripts(packages: Packages, tmp_path: Path) -> None:
    control = tmp_path / "control"
    dpkg_deb("-e", str(packages.deb), str(control))
    assert (control / "conffiles").read_text().split() == ["/etc/preempt-agent/agent.toml"]
    for deb_name, ours in (
        ("postinst", "postinstall.sh"),
        ("prerm", "preremove.sh"),
        ("postrm", "postremove.sh"),
    ):
        assert (control / deb_name).read_text() == (PACKAGING / "scripts" / ours).read_text()
    assert not (control / "preinst").exists()


def test_launcher_runs_the_packaged_agent(packages: Packages, tmp_path: Path) -> None:
    """The launcher of the .deb, pointed at the unpacked tree, runs ``--version``."""
    root = tmp_path / "root"
    dpkg_deb("-x", str(packages.deb), str(root))
    launcher = (root / "usr/bin/preempt-agent").read_text()
    assert launcher.startswith("#!/usr/bin/python3")
    relocated = tmp_path / "preempt-agent"
    relocated.write_text(launcher.replace(LIB, str(root) + LIB))
    proc = subprocess.run(
        [sys.executable, "-I", str(relocated), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert packages.version in proc.stdout + proc.stderr
    probe = (
        "import sys; sys.dont_write_bytecode = True; "
        f"sys.path[0:0] = [{str(root) + LIB!r}, {str(root) + LIB + '/vendor'!r}]; "
        "import agent, tenacity, tomli; "
        "print(agent.__file__); print(tenacity.__file__); print(tomli.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert all(path.startswith(str(root) + LIB) for path in out), out
    assert not list(root.rglob("__pycache__")), "the launcher wrote bytecode"


def test_lintian_finds_no_errors(packages: Packages) -> None:
    need("lintian")
    proc = subprocess.run(
        ["lintian", "--fail-on", "error", str(packages.deb)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert proc.returncode == 0 and not errors, proc.stdout + proc.stderr


def test_rpmlint_finds_no_errors(packages: Packages) -> None:
    need("rpmlint")
    proc = subprocess.run(
        ["rpmlint", "--config", str(PACKAGING / "rpmlintrc.toml"), str(packages.rpm)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if "ModuleNotFoundError" in proc.stderr:
        pytest.skip(f"rpmlint cannot run here: {proc.stderr.strip().splitlines()[-1]}")
    assert " 0 errors" in proc.stdout, proc.stdout + proc.stderr
