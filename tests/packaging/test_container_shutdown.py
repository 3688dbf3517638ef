"""The shutdown path under a real systemd: `systemctl poweroff` in a booted GCP container.

GCP sets ``instance/preempted`` to ``TRUE`` at the moment it sends the ACPI soft-off, so
systemd is already stopping the agent when the notice appears. These tests boot the .deb
(installed in the root before boot, as on an image: the unit starts with the system) with
``provider = "gcp"`` and ``metadata.google.internal`` resolving, through the container's
/etc/hosts, to the mock GCP metadata server at its real address, 169.254.169.254. As in
test_container.py, the container and the mock share a network namespace of our own that
has nothing but loopback. A hook of every kind writes its ``PREEMPT_*`` variables into a
folder bind-mounted from the host, so its record outlives the container.

* ``preempted`` turned ``TRUE`` just before ``systemctl poweroff``: the hook runs as a
  ``spot-interruption`` drain on the shutdown path, and the poweroff still ends well within
  the unit's stop timeout.
* a plain poweroff with ``FALSE``: no hook runs, and the container is off at once.
* the default config, where the ``preempted`` hanging GET races the stop for the same
  ``TRUE`` (GCP's real timing): whichever wins, the hook runs exactly once.

The bind mount needs no ordering of its own: the unit stops before basic.target, so before
local-fs.target and the mounts it orders, and before network-online.target.

Each test boots a fresh copy of one prepared root (a poweroff ends the container), under a
machine name and namespace of its own, so it never meets test_container.py's.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pytest

from tests.packaging.support import REPO, Packages
from tests.packaging.test_container import (
    BASE_TAR,
    UNIT,
    Container,
    Mock,
    Netns,
    build_base_tarball,
    chroot,
    container_host,  # noqa: F401 - a fixture, used by name
    ok,
    package_dependencies,
    power_off,
    run,
    system_state,
    wait_for,
)

pytestmark = [pytest.mark.root, pytest.mark.container]

GCP_METADATA = "169.254.169.254"
"""What metadata.google.internal resolves to on a real VM."""
GCP_INSTANCE_ID = "4520031799277581759"
PREEMPTED = "/computeMetadata/v1/instance/preempted"
MACHINE = "preempt-shutdown"
RECORDS = "/var/lib/hook-record"
"""Inside the container; bind-mounted from a folder of the test's on the host."""
SHUTDOWN_TIMEOUT = 25  # agent.toml's default, a margin under the unit's TimeoutStopSec=30s
STOP_TIMEOUT = 30
HOOK_SECONDS = 2
# The preempted watcher is switched off, so `preempted` is read only by the stop-time check:
# with it on, its hanging GET would see TRUE within milliseconds of the change, before
# systemd got round to stopping the agent, and the drain would start as an ordinary notice
# (the agent then lets it finish through the stop). The test would pass either way and so
# would prove nothing about the shutdown path; with the watcher off, a drain can only come
# from the shutdown path, and the mock's request log shows that the one read of `preempted`
# was the stop's plain GET. The maintenance-event watcher stays on: the agent is watching,
# with a hanging GET held on the server, as on a real VM.
TEST_CONFIG = """\
provider = "gcp"

[gcp.preempted]
enabled = false
"""
RECORD_HOOK = f"""\
#!/bin/sh
# preempt-agent: kinds=all
# One file per run, written whole after a pause: a record shows that the poweroff let
# the hook finish, and a second run (or one cut short) shows too.
out={RECORDS}
sleep {HOOK_SECONDS}
env | grep '^PREEMPT_' | sort >"$out/.run-$$"
mv "$out/.run-$$" "$out/run-$1-$$"
"""
HOSTS = f"""\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
{GCP_METADATA}\tmetadata.google.internal metadata
"""


# -- the prepared root, copied for each boot ---------------------------------------------------


def prepare_gcp_root(root: Path, packages: Packages) -> None:
    """The base root with the .deb installed and enabled, our config, hook and hosts file."""
    build_base_tarball()
    ok(["tar", "-C", str(root), "--numeric-owner", "-xf", str(BASE_TAR)], timeout=600)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    install = ["apt-get", "-y", "-q", "install", "--no-install-recommends"]
    deps = package_dependencies(packages.deb)
    proc = chroot(root, *install, *deps)
    if proc.returncode != 0:  # lists missing or stale: refresh them once
        update = chroot(root, "apt-get", "-q", "update")
        assert update.returncode == 0, f"apt-get update in the chroot failed:\n{update.stderr}"
        proc = chroot(root, *install, *deps)
    assert proc.returncode == 0, f"installing {deps} in the chroot failed:\n{proc.stderr}"
    shutil.copy(packages.deb, root / "tmp")
    proc = chroot(root, "dpkg", "-i", f"/tmp/{packages.deb.name}")
    assert proc.returncode == 0, f"dpkg -i in the chroot failed:\n{proc.stdout}\n{proc.stderr}"
    (root / "tmp" / packages.deb.name).unlink()
    policy.unlink()
    (root / "etc/resolv.conf").write_text("")  # the booted container has no network
    wants = root / "etc/systemd/system/multi-user.target.wants" / UNIT
    assert wants.is_symlink(), "the package did not enable the unit in the chroot"
    (root / "etc/hosts").write_text(HOSTS)
    (root / "etc/preempt-agent/agent.toml").write_text(TEST_CONFIG)
    hook = root / "etc/preempt-agent/hooks.d/50-record"
    hook.write_text(RECORD_HOOK)
    hook.chmod(0o755)
    (root / RECORDS.lstrip("/")).mkdir(parents=True)


@pytest.fixture(scope="module")
def gcp_root(
    container_host: None,  # noqa: F811 - the fixture imported above
    packages: Packages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("shutdown-root") / "root"
    root.mkdir()
    try:
        prepare_gcp_root(root, packages)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the namespace, the GCP mock and the booted container --------------------------------------


@contextlib.contextmanager
def gcp_namespace() -> Iterator[Netns]:
    netns = Netns(f"{MACHINE}-{os.getpid()}")
    ok(["ip", "netns", "add", netns.name])
    try:
        ok(["ip", "-n", netns.name, "link", "set", "lo", "up"])
        ok(["ip", "-n", netns.name, "addr", "add", f"{GCP_METADATA}/32", "dev", "lo"])
        links = ok(["ip", "-n", netns.name, "-o", "link", "show"]).splitlines()
        assert len(links) == 1 and ": lo:" in links[0], f"namespace is not loopback-only: {links}"
        yield netns
    finally:
        run(["ip", "netns", "del", netns.name])


@contextlib.contextmanager
def gcp_mock(netns: Netns) -> Iterator[Mock]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [*netns.enter(), sys.executable, "-m", "agent.mock", "--flavor", "gcp"]
    cmd += ["--host", GCP_METADATA, "--port", "80", "--instance-id", GCP_INSTANCE_ID]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"mock GCP metadata server did not start:\n{''.join(output)}")
            if "listening on" in line:
                break
        yield Mock(netns, proc, url=f"http://{GCP_METADATA}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class Boot:
    mock: Mock
    box: Container
    records: Path
    """The host side of RECORDS."""

    def set_preempted(self, value: str) -> None:
        self.mock.call("PUT", "/__mock__/path", {"path": PREEMPTED, "body": value})

    def watching(self) -> bool:
        props = self.box.show("ActiveState", "StatusText")
        return props["ActiveState"] == "active" and props["StatusText"].startswith("watching gcp")

    def poweroff(self) -> float:
        """``systemctl poweroff`` inside; the seconds until systemd-nspawn has exited."""
        started = time.monotonic()
        proc = self.box.exec("systemctl", "poweroff", timeout=30)
        assert proc.returncode == 0, f"systemctl poweroff failed:\n{proc.stderr}"
        try:
            code = self.box.nspawn.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the container did not power off within 90 s\n{self.console()}")
        took = time.monotonic() - started
        assert code == 0, f"systemd-nspawn exited {code}\n{self.console()}"
        return took

    def console(self) -> str:
        return self.box.log.read_text(errors="replace")[-4000:]

    def journal(self) -> list[dict]:
        """The container's persisted journal, read from the host once it is off."""
        journal = f"--directory={self.box.root}/var/log/journal"
        out = ok(["journalctl", journal, "--no-pager", "-o", "json"])
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def run_records(self) -> list[dict[str, str]]:
        return [
            dict(line.split("=", 1) for line in path.read_text().splitlines())
            for path in sorted(self.records.glob("run-*"))
        ]


@contextlib.contextmanager
def booted(template: Path, work: Path, config: Optional[str] = None) -> Iterator[Boot]:
    """A copy of ``template`` booted with RECORDS bound to ``work/records``; the copy (and
    its journal) and the mock are gone once the block is left, the records stay."""
    root = work / "root"
    records = work / "records"
    records.mkdir()
    ok(["cp", "-a", "--reflink=auto", str(template), str(root)], timeout=600)
    if config is not None:
        (root / "etc/preempt-agent/agent.toml").write_text(config)
    try:
        with gcp_namespace() as netns, gcp_mock(netns) as mock:
            log = work / "nspawn.log"
            with log.open("w") as out:
                boot = ["--keep-unit", "--register=no", "--boot", f"--directory={root}"]
                boot += [f"--machine={MACHINE}", "--console=pipe", f"--bind={records}:{RECORDS}"]
                nspawn = subprocess.Popen(
                    [*netns.enter(), "systemd-nspawn", "--quiet", *boot],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            box = Container(root, nspawn, log)
            try:
                started = time.monotonic()
                wait_for(
                    "the container to boot",
                    lambda: nspawn.poll() is None and system_state(box) in ("running", "degraded"),
                    90,
                )
                box.boot_seconds = time.monotonic() - started
                yield Boot(mock, box, records)
            finally:
                power_off(box)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def started_watching(boot: Boot) -> None:
    """The unit is active, the agent watches GCP and holds a hanging GET on the server."""
    box = boot.box
    state = box.exec("systemctl", "is-system-running").stdout.strip()
    failed = box.exec("systemctl", "--failed", "--no-legend", "--plain").stdout
    assert state == "running", f"system is {state}; failed units:\n{failed}"
    assert box.ok("getent", "hosts", "metadata.google.internal").startswith(GCP_METADATA)
    wait_for("the agent to watch gcp", boot.watching, 30)
    wait_for(
        "a hanging GET of maintenance-event",
        lambda: any(
            "wait_for_change=true" in r["query"] and r["path"].endswith("/maintenance-event")
            for r in boot.mock.requests()
        ),
        30,
    )
    assert box.show("NRestarts")["NRestarts"] == "0", box.diagnose()
    print(f"container booted in {box.boot_seconds:.1f} s")


def agent_entries(journal: list[dict]) -> list[dict]:
    return [e for e in journal if UNIT in (e.get("UNIT"), e.get("_SYSTEMD_UNIT"))]


def stop_seconds(entries: list[dict]) -> float:
    """From systemd's "Stopping" of the unit to its end, on the container's monotonic clock."""
    stopping = [e for e in entries if str(e.get("MESSAGE", "")).startswith("Stopping ")]
    ended = [
        e
        for e in entries
        if e.get("UNIT") == UNIT
        and ("Deactivated" in str(e.get("MESSAGE")) or "Stopped " in str(e.get("MESSAGE")))
    ]
    assert stopping and ended, "no Stopping/Stopped lines for the unit in the journal"
    first = int(stopping[-1]["__MONOTONIC_TIMESTAMP"])
    return (int(ended[-1]["__MONOTONIC_TIMESTAMP"]) - first) / 1e6


def messages(entries: list[dict]) -> str:
    return "\n".join(str(e.get("MESSAGE", "")) for e in entries)


# -- the tests ----------------------------------------------------------------------------------


def test_poweroff_while_preempted_drains_on_the_shutdown_path(
    gcp_root: Path, tmp_path: Path
) -> None:
    with booted(gcp_root, tmp_path) as boot:
        started_watching(boot)
        # GCP turns preempted TRUE as it sends the soft-off: here, just before the poweroff.
        boot.set_preempted("TRUE")
        stop_requested = datetime.now(timezone.utc)
        took = boot.poweroff()
        reads = [r for r in boot.mock.requests() if r["path"] == PREEMPTED]
        entries = agent_entries(boot.journal())
    print(f"poweroff with preempted TRUE: container off in {took:.1f} s")

    runs = boot.run_records()
    assert len(runs) == 1, f"the hook ran {len(runs)} times: {runs}\n{boot.console()}"
    env = runs[0]
    assert env["PREEMPT_KIND"] == "spot-interruption"
    assert env["PREEMPT_PROVIDER"] == "gcp"
    assert env["PREEMPT_ACTION"] == "terminate"
    assert env["PREEMPT_INSTANCE_ID"] == GCP_INSTANCE_ID
    assert env["PREEMPT_PHASE"] == "drain"
    assert env["PREEMPT_DRY_RUN"] == "0"
    # The deadline is the stop plus shutdown_timeout (sooner than GCP's 30 s notice).
    deadline = datetime.strptime(env["PREEMPT_DEADLINE"], "%Y-%m-%dT%H:%M:%SZ")
    ahead = (deadline.replace(tzinfo=timezone.utc) - stop_requested).total_seconds()
    assert SHUTDOWN_TIMEOUT - 3 <= ahead <= SHUTDOWN_TIMEOUT + 5, env
    assert 0 < int(env["PREEMPT_SECONDS_LEFT"]) <= SHUTDOWN_TIMEOUT

    # Only the stop read `preempted`: once, a plain GET (the watcher is off, see TEST_CONFIG).
    assert len(reads) == 1 and "wait_for_change" not in reads[0]["query"], reads

    text = messages(entries)
    assert "draining on the shutdown path" in text, text[-4000:]
    hook_done = [e for e in entries if e.get("HOOK") == "50-record" and e.get("OUTCOME") == "ok"]
    assert hook_done, text[-4000:]
    assert hook_done[0]["NOTICE_ID"] == env["PREEMPT_EVENT_ID"]
    assert "timed out" not in text and "SIGKILL" not in text, text[-4000:]
    assert any("Deactivated successfully" in str(e.get("MESSAGE")) for e in entries), text
    stop = stop_seconds(entries)
    print(f"agent stop (Stopping to Deactivated, with the drain): {stop:.2f} s")
    assert HOOK_SECONDS <= stop < STOP_TIMEOUT
    assert took >= HOOK_SECONDS, "the container went down before the hook could finish"
    assert took < STOP_TIMEOUT + 10, f"poweroff took {took:.1f} s"


def test_plain_poweroff_runs_no_hook_and_is_prompt(gcp_root: Path, tmp_path: Path) -> None:
    with booted(gcp_root, tmp_path) as boot:
        started_watching(boot)
        took = boot.poweroff()
        reads = [r for r in boot.mock.requests() if r["path"] == PREEMPTED]
        entries = agent_entries(boot.journal())
    print(f"plain poweroff with preempted FALSE: container off in {took:.1f} s")

    assert boot.run_records() == [], "a hook ran on a plain poweroff"
    # The stop asked once whether this is an interruption, and was told it is not.
    assert len(reads) == 1 and "wait_for_change" not in reads[0]["query"], reads

    text = messages(entries)
    assert "stop requested; no drain under way, exiting" in text, text[-4000:]
    assert "shutdown path" not in text, text[-4000:]
    stop = stop_seconds(entries)
    print(f"agent stop (Stopping to Deactivated): {stop:.2f} s")
    assert stop < 5, f"the idle agent took {stop:.1f} s to stop\n{text[-4000:]}"
    assert took < 15, f"poweroff took {took:.1f} s (TimeoutStopSec=30s)"


def test_poweroff_while_preempted_with_the_watcher_on_drains_once(
    gcp_root: Path, tmp_path: Path
) -> None:
    """GCP's own timing with the default config: the hanging GET and the stop race for the
    same TRUE. Whichever wins, the hook runs exactly once and the poweroff stays prompt."""
    with booted(gcp_root, tmp_path, config='provider = "gcp"\n') as boot:
        started_watching(boot)
        wait_for(
            "a hanging GET of preempted",
            lambda: any(
                "wait_for_change=true" in r["query"] and r["path"] == PREEMPTED
                for r in boot.mock.requests()
            ),
            30,
        )
        boot.set_preempted("TRUE")
        took = boot.poweroff()
        entries = agent_entries(boot.journal())
    text = messages(entries)
    path = "shutdown path" if "draining on the shutdown path" in text else "watcher"
    print(f"poweroff with preempted TRUE, watcher on: drained by the {path}, off in {took:.1f} s")

    runs = boot.run_records()
    assert len(runs) == 1, f"the hook ran {len(runs)} times: {runs}\n{text[-4000:]}"
    assert runs[0]["PREEMPT_KIND"] == "spot-interruption"
    assert runs[0]["PREEMPT_INSTANCE_ID"] == GCP_INSTANCE_ID
    assert "timed out" not in text and "SIGKILL" not in text, text[-4000:]
    assert took < STOP_TIMEOUT + 10, f"poweroff took {took:.1f} s"
