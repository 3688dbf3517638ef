"""The install scripts, shared by the .deb and the .rpm, against a recording fake systemctl.

Each case runs the scripts in a private mount namespace whose /run, /etc and /var/lib are
empty tmpfs mounts, so nothing on the host is touched; /run/systemd/system exists there
when the case pretends that systemd is running.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from tests.packaging.support import PACKAGING, need, need_root

SCRIPTS = PACKAGING / "scripts"
PROBES = (
    "/etc/preempt-agent",
    "/etc/preempt-agent/hooks.d/10-mine",
    "/var/lib/preempt-agent",
    "/var/lib/preempt-agent/.package-removed",
)

pytestmark = pytest.mark.root


def run_scripts(
    tmp_path: Path, steps: list[str], systemd: bool = True, setup: str = ""
) -> tuple[list[str], set[str]]:
    """Run ``steps`` ("postinstall.sh configure ''", ...); return systemctl calls and paths left."""
    need_root()
    need("unshare", "mount")
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "systemctl.log"
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$*" >>{shlex.quote(str(log))}\n')
    (fake / "systemctl").chmod(0o755)
    lines = [
        "set -e",
        "for d in /run /etc /var/lib; do mount -t tmpfs tmpfs $d; done",
        "mkdir -p /run/systemd/system" if systemd else ":",
        setup or ":",
        f"export PATH={shlex.quote(str(fake))}:/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    lines += [f"sh {shlex.quote(str(SCRIPTS))}/{step}" for step in steps]
    lines += [f"[ ! -e {p} ] || echo 'left {p}'" for p in PROBES]
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    left = {line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("left ")}
    return calls, left


INSTALL = ["daemon-reload", "enable preempt-agent.service", "start preempt-agent.service"]
UPGRADE = ["daemon-reload", "try-restart preempt-agent.service"]
REMOVE = ["stop preempt-agent.service", "disable preempt-agent.service"]
AFTER_REMOVE = ["daemon-reload", "reset-failed preempt-agent.service"]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (["postinstall.sh configure ''"], INSTALL),
        (["postinstall.sh 1"], INSTALL),
        (["postinstall.sh configure 0.1.0"], UPGRADE),
        (["postinstall.sh 2"], UPGRADE),
        # deb upgrade: old prerm, old postrm, then the new postinst.
        (
            [
                "preremove.sh upgrade 0.2.0",
                "postremove.sh upgrade 0.2.0",
                "postinstall.sh configure 0.1.0",
            ],
            UPGRADE,
        ),
        # rpm upgrade: new %post, then the old %preun and %postun with 1 instance left.
        (["postinstall.sh 2", "preremove.sh 1", "postremove.sh 1"], UPGRADE),
        (["preremove.sh remove", "postremove.sh remove"], REMOVE + AFTER_REMOVE),
        (["preremove.sh 0", "postremove.sh 0"], REMOVE + AFTER_REMOVE),
    ],
    ids=[
        "deb-install",
        "rpm-install",
        "deb-upgrade-postinst",
        "rpm-upgrade-post",
        "deb-upgrade",
        "rpm-upgrade",
        "deb-remove",
        "rpm-erase",
    ],
)
def test_systemctl_calls(tmp_path: Path, steps: list[str], expected: list[str]) -> None:
    calls, _ = run_scripts(tmp_path, steps)
    assert calls == expected


def test_upgrade_never_enables_or_stops(tmp_path: Path) -> None:
    calls, _ = run_scripts(
        tmp_path, ["preremove.sh upgrade 0.2.0", "postinstall.sh configure 0.1.0"]
    )
    assert not [c for c in calls if c.split()[0] in ("enable", "disable", "stop", "start")]


def test_without_running_systemd_only_enables(tmp_path: Path) -> None:
    """In an image build or a chroot: the symlinks are made, nothing is started."""
    calls, _ = run_scripts(tmp_path, ["postinstall.sh configure ''"], systemd=False)
    assert calls == ["enable preempt-agent.service"]
    (tmp_path / "remove").mkdir()
    calls, _ = run_scripts(tmp_path / "remove", ["preremove.sh remove"], systemd=False)
    assert calls == ["disable preempt-agent.service"]


def test_reinstall_after_remove_is_a_fresh_install(tmp_path: Path) -> None:
    """dpkg calls "configure <old-version>" after remove without purge: enable and start again."""
    calls, left = run_scripts(
        tmp_path,
        ["preremove.sh remove", "postremove.sh remove", "postinstall.sh configure 0.1.0"],
        setup="mkdir -p /var/lib/preempt-agent",
    )
    assert calls == REMOVE + AFTER_REMOVE + INSTALL
    assert "/var/lib/preempt-agent/.package-removed" not in left


def test_remove_keeps_config_and_state_purge_removes_them(tmp_path: Path) -> None:
    setup = (
        "mkdir -p /etc/preempt-agent/hooks.d /var/lib/preempt-agent && "
        "touch /etc/preempt-agent/hooks.d/10-mine /var/lib/preempt-agent/state.json"
    )
    _, left = run_scripts(tmp_path, ["preremove.sh remove", "postremove.sh remove"], setup=setup)
    assert "/etc/preempt-agent/hooks.d/10-mine" in left
    assert "/var/lib/preempt-agent/.package-removed" in left
    (tmp_path / "purge").mkdir()
    _, left = run_scripts(
        tmp_path / "purge",
        ["preremove.sh remove", "postremove.sh remove", "postremove.sh purge"],
        setup=setup,
    )
    assert left == set()


def test_rpm_erase_keeps_state(tmp_path: Path) -> None:
    _, left = run_scripts(
        tmp_path, ["preremove.sh 0", "postremove.sh 0"], setup="mkdir -p /var/lib/preempt-agent"
    )
    assert "/var/lib/preempt-agent" in left
    assert "/var/lib/preempt-agent/.package-removed" not in left
