"""The .deb under a real systemd: install, drain a spot notice, upgrade, remove, purge.

A minimal Debian 12 root (debootstrap, cached in /var/cache/preempt-agent-test) gets the
package's dependencies installed in a chroot, then boots with systemd-nspawn inside a
network namespace of our own that has nothing but loopback, with 169.254.169.254 and
100.100.100.200 on it. The mock metadata service listens there, so the agent, which starts
as soon as the package is installed, can reach only the mock. The tests below run in order
against one booted container and share its state; each skips when an earlier step failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.packaging.support import REPO, Packages, need, need_root

pytestmark = [pytest.mark.root, pytest.mark.container]

CACHE = Path(os.environ.get("PREEMPT_TEST_CACHE", "/var/cache/preempt-agent-test"))
MIRROR = os.environ.get("PREEMPT_TEST_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# What the booted container needs without network; bump CACHE_VERSION when it changes.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-requests",
    "python3-systemd",
)
CACHE_VERSION = 1
BASE_TAR = CACHE / f"{SUITE}-minbase-v{CACHE_VERSION}.tar"

AWS_IMDS = "169.254.169.254"
ALIBABA_IMDS = "100.100.100.200"
INSTANCE_ID = "i-0123456789abcdef0"
UNIT = "preempt-agent.service"
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NSPAWN_OPTIONS = ("--machine=preempt-test", "--console=pipe")
TEST_CONFIG = """\
# Written before the package is installed: dpkg must keep it (conffile).
provider = "aws"
"""
RECORD_HOOK = """\
#!/bin/sh
# preempt-agent: kinds=spot-interruption
out=/var/lib/hook-test
mkdir -p "$out"
env | sort >"$out/all-env"
cat >"$out/notice.json"
echo "$1" >"$out/phase"
env | grep '^PREEMPT_' | sort >"$out/env.tmp"
mv "$out/env.tmp" "$out/env"
"""


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def run(cmd: list[str], timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        **kwargs,  # type: ignore[arg-type]
    )


def ok(cmd: list[str], timeout: float = 120, **kwargs: object) -> str:
    proc = run(cmd, timeout, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


# -- the cached base root and the per-run copy ---------------------------------------------


def build_base_tarball() -> None:
    """debootstrap a minimal bookworm with BASE_PACKAGES into BASE_TAR (once, under a lock)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if BASE_TAR.exists():
            return
        need("debootstrap")
        work = CACHE / f"build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            ok(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    SUITE,
                    str(work),
                    MIRROR,
                ],
                timeout=1500,
            )
            # No package lists or archives in the cache: a later run refreshes them if needed.
            shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
            (work / "var/cache/apt/archives/partial").mkdir(parents=True)
            for lists in (work / "var/lib/apt/lists").glob("*_*"):
                lists.unlink()
            partial = BASE_TAR.with_suffix(".tar.partial")
            ok(["tar", "-C", str(work), "--numeric-owner", "-cf", str(partial), "."], timeout=600)
            partial.rename(BASE_TAR)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def chroot(root: Path, *cmd: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``cmd`` chrooted in ``root`` with /proc mounted in a private mount namespace."""
    script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    env = {
        "PATH": CONTAINER_PATH,
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
    }
    unshare = ["unshare", "--mount", "--propagation", "private", "--fork"]
    return run(
        [*unshare, "sh", "-c", script, str(root), *cmd],
        timeout=timeout,
        env=env,
    )


def package_dependencies(deb: Path) -> list[str]:
    """Names from the .deb's Depends (first alternative), plus python3-systemd (notify)."""
    depends = ok(["dpkg-deb", "-f", str(deb), "Depends"]).strip()
    names = [part.split("|")[0].split("(")[0].strip() for part in depends.split(",")]
    return [*[n for n in names if n], "python3-systemd"]


def prepare_root(root: Path, packages: Packages, upgrade: Packages) -> None:
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
    policy.unlink()
    (root / "etc/resolv.conf").write_text("")  # the booted container has no network
    config = root / "etc/preempt-agent/agent.toml"
    config.parent.mkdir(parents=True)
    config.write_text(TEST_CONFIG)
    pkgs = root / "root/pkgs"
    pkgs.mkdir(parents=True)
    shutil.copy(packages.deb, pkgs)
    shutil.copy(upgrade.deb, pkgs)


# -- the network namespace and the mock metadata service -----------------------------------


@dataclass
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def enter(self) -> list[str]:
        return ["nsenter", f"--net={self.path}"]


@contextlib.contextmanager
def network_namespace() -> Iterator[Netns]:
    netns = Netns(f"preempt-test-{os.getpid()}")
    ok(["ip", "netns", "add", netns.name])
    try:
        ok(["ip", "-n", netns.name, "link", "set", "lo", "up"])
        for address in (AWS_IMDS, ALIBABA_IMDS):
            ok(["ip", "-n", netns.name, "addr", "add", f"{address}/32", "dev", "lo"])
        links = ok(["ip", "-n", netns.name, "-o", "link", "show"]).splitlines()
        assert len(links) == 1 and ": lo:" in links[0], f"namespace is not loopback-only: {links}"
        yield netns
    finally:
        run(["ip", "netns", "del", netns.name])


@dataclass
class Mock:
    """The mock metadata service inside the namespace, controlled from inside it too."""

    netns: Netns
    proc: subprocess.Popen
    url: str = f"http://{AWS_IMDS}"

    def call(self, method: str, path: str, body: Optional[object] = None) -> object:
        script = (
            "import json, sys, urllib.request\n"
            "method, url, data = sys.argv[1], sys.argv[2], sys.argv[3]\n"
            "req = urllib.request.Request(url, data=data.encode() or None, method=method)\n"
            "with urllib.request.urlopen(req, timeout=10) as r:\n"
            "    sys.stdout.write(r.read().decode())\n"
        )
        data = "" if body is None else json.dumps(body)
        out = ok(
            [*self.netns.enter(), sys.executable, "-I", "-c", script, method, self.url + path, data]
        )
        return json.loads(out) if out.strip().startswith(("[", "{")) else out

    def requests(self) -> list[dict]:
        log = self.call("GET", "/__mock__/requests")
        assert isinstance(log, list)
        return log


@contextlib.contextmanager
def mock_metadata(netns: Netns) -> Iterator[Mock]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [*netns.enter(), sys.executable, "-m", "agent.mock", "--flavor", "aws"]
    cmd += ["--host", AWS_IMDS, "--port", "80", "--instance-id", INSTANCE_ID]
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
                pytest.fail(f"mock metadata service did not start:\n{''.join(output)}")
            if "listening on" in line:
                break
        yield Mock(netns, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- the booted container ---------------------------------------------------------------------


@dataclass
class Container:
    root: Path
    nspawn: subprocess.Popen
    log: Path
    pid1: int = 0
    boot_seconds: float = 0.0
    done: set[str] = field(default_factory=set)

    def exec(self, *cmd: str, timeout: float = 120, input: str = "") -> subprocess.CompletedProcess:
        env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "TERM": "dumb"}
        return subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "env", "-i"]
            + [f"{k}={v}" for k, v in env.items()]
            + list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )

    def ok(self, *cmd: str, timeout: float = 120) -> str:
        proc = self.exec(*cmd, timeout=timeout)
        assert proc.returncode == 0, (
            f"in the container: {' '.join(cmd)} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}\n{self.diagnose()}"
        )
        return proc.stdout

    def show(self, *props: str) -> dict[str, str]:
        out = self.exec("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def diagnose(self) -> str:
        status = self.exec("systemctl", "status", "--no-pager", "--full", UNIT).stdout
        journal = self.exec("journalctl", "--no-pager", "-o", "short-monotonic", "-u", UNIT).stdout
        return f"--- systemctl status\n{status}\n--- journal\n{journal[-6000:]}"

    def require(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.skip(f"an earlier step failed: {', '.join(missing)}")


def container_init(nspawn_pid: int) -> int:
    """The container's PID 1: systemd-nspawn's only child."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return 0
    return int(children[0]) if children else 0


def system_state(box: Container) -> str:
    if not box.pid1:
        box.pid1 = container_init(box.nspawn.pid)
        if not box.pid1:
            return ""
    return box.exec("systemctl", "is-system-running", timeout=30).stdout.strip()


def power_off(box: Container) -> None:
    """Orderly halt (SIGTERM makes systemd-nspawn halt the container), then SIGKILL if needed."""
    if box.nspawn.poll() is None:
        box.nspawn.send_signal(signal.SIGTERM)
        try:
            box.nspawn.wait(timeout=60)
        except subprocess.TimeoutExpired:
            if box.pid1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(box.pid1, signal.SIGKILL)  # ends the whole PID namespace
            box.nspawn.kill()
            box.nspawn.wait(timeout=30)
    if box.pid1:
        wait_for(
            "the container's processes to end", lambda: not Path(f"/proc/{box.pid1}").exists(), 30
        )


@pytest.fixture(scope="session")
def container_host() -> None:
    """Skip before anything is built when this host cannot run the container."""
    need_root()
    need("systemd-nspawn", "ip", "nsenter", "unshare", "tar", "dpkg-deb")
    if not BASE_TAR.exists():
        need("debootstrap")


@pytest.fixture(scope="module")
def mock_and_container(
    container_host: None,
    packages: Packages,
    upgrade_deb: Packages,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Mock, Container]]:
    build_base_tarball()
    root = tmp_path_factory.mktemp("container") / "root"
    root.mkdir()
    try:
        prepare_root(root, packages, upgrade_deb)
        with network_namespace() as netns, mock_metadata(netns) as mock:
            log = root.parent / "nspawn.log"
            started = time.monotonic()
            with log.open("w") as out:
                boot = ["--keep-unit", "--register=no", "--boot", f"--directory={root}"]
                nspawn = subprocess.Popen(
                    [*netns.enter(), "systemd-nspawn", "--quiet", *boot, *NSPAWN_OPTIONS],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            box = Container(root, nspawn, log)
            try:
                wait_for(
                    "the container to boot",
                    lambda: nspawn.poll() is None and system_state(box) in ("running", "degraded"),
                    90,
                )
                box.boot_seconds = time.monotonic() - started
                yield mock, box
            finally:
                power_off(box)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mock(mock_and_container: tuple[Mock, Container]) -> Mock:
    return mock_and_container[0]


@pytest.fixture
def box(mock_and_container: tuple[Mock, Container]) -> Container:
    return mock_and_container[1]


# -- the steps ---------------------------------------------------------------------------------


def test_container_has_loopback_only(box: Container) -> None:
    out = box.ok("python3", "-c", "import socket; print([n for _, n in socket.if_nameindex()])")
    assert out.strip() == "['lo']"
    state = box.exec("systemctl", "is-system-running").stdout.strip()
    failed = box.exec("systemctl", "--failed", "--no-legend", "--plain").stdout
    assert state == "running", f"system is {state}; failed units:\n{failed}"
    print(f"container booted in {box.boot_seconds:.1f} s")
    box.done.add("boot")


def test_install_starts_the_service(box: Container, mock: Mock, packages: Packages) -> None:
    box.require("boot")
    started = time.monotonic()
    box.ok(
        "dpkg",
        "--force-confdef",
        "--force-confold",
        "-i",
        f"/root/pkgs/{packages.deb.name}",
        timeout=300,
    )
    print(f"dpkg -i took {time.monotonic() - started:.1f} s")
    assert box.exec("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    wait_for(
        "the STATUS= line",
        lambda: box.show("StatusText")["StatusText"].startswith("watching aws"),
        30,
    )
    props = box.show("ActiveState", "SubState", "NRestarts", "Type", "StatusText", "MainPID")
    assert props["ActiveState"] == "active", box.diagnose()
    assert props["SubState"] == "running"
    assert props["NRestarts"] == "0"
    assert props["Type"] == "notify"
    status = box.exec("systemctl", "status", "--no-pager", UNIT).stdout
    assert 'Status: "watching aws' in status, status
    # WATCHDOG=1 arrives from the loop: systemd's timestamp of the last ping moves on.
    assert box.show("WatchdogUSec")["WatchdogUSec"] != "0"
    first = box.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
    wait_for(
        "a watchdog ping",
        lambda: box.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"] != first,
        30,
    )

    # The config written before the install is kept, and is the package's conffile.
    assert (box.root / "etc/preempt-agent/agent.toml").read_text() == TEST_CONFIG
    conffiles = box.ok("dpkg-query", "-W", "-f=${Conffiles}", "preempt-agent")
    assert "/etc/preempt-agent/agent.toml" in conffiles
    assert box.ok("preempt-agent", "--version").strip().endswith(packages.version)
    # Byte-compiled once by the post-install script, as root, for the distribution's Python.
    assert list((box.root / "usr/lib/preempt-agent/agent/__pycache__").glob("cli.cpython-*.pyc"))

    # The agent polls the mock with an IMDSv2 token.
    log = mock.requests()
    assert any(r["method"] == "PUT" and r["path"] == "/latest/api/token" for r in log), log[:5]
    polls = [r for r in log if r["path"] == "/latest/meta-data/spot/instance-action"]
    assert polls, "the agent never polled the spot path"
    headers = {k.lower(): v for k, v in polls[-1]["headers"].items()}
    assert headers.get("x-aws-ec2-metadata-token"), polls[-1]
    box.done.add("installed")


def test_spot_notice_runs_hooks_and_exits(box: Container, mock: Mock) -> None:
    box.require("installed")
    hook = box.root / "etc/preempt-agent/hooks.d/50-record"
    hook.write_text(RECORD_HOOK)
    hook.chmod(0o755)
    deadline = (datetime.now(timezone.utc) + timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%SZ")
    notice = {"action": "terminate", "time": deadline}
    mock.call(
        "PUT",
        "/__mock__/path",
        {"path": "/latest/meta-data/spot/instance-action", "body": json.dumps(notice)},
    )
    started = time.monotonic()
    wait_for(
        "the agent to drain and exit",
        lambda: box.show("ActiveState")["ActiveState"] in ("inactive", "failed"),
        90,
    )
    print(f"notice to exit: {time.monotonic() - started:.1f} s")
    props = box.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode", "NRestarts")
    assert props["ActiveState"] == "inactive", box.diagnose()
    assert props["Result"] == "success", box.diagnose()
    assert props["ExecMainStatus"] == "0", box.diagnose()
    assert props["NRestarts"] == "0"

    out = box.root / "var/lib/hook-test"
    assert (out / "env").exists(), f"the hook did not run\n{box.diagnose()}"
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines())
    assert env["PREEMPT_PROVIDER"] == "aws"
    assert env["PREEMPT_KIND"] == "spot-interruption"
    assert env["PREEMPT_ACTION"] == "terminate"
    assert env["PREEMPT_INSTANCE_ID"] == INSTANCE_ID
    assert env["PREEMPT_DEADLINE"] == deadline
    assert env["PREEMPT_DRY_RUN"] == "0"
    assert env["PREEMPT_EVENT_ID"]
    assert 0 < int(env["PREEMPT_SECONDS_LEFT"]) <= 120
    assert (out / "phase").read_text().strip() == "drain"
    everything = (out / "all-env").read_text()
    for secret in ("NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="):
        assert secret not in everything, f"{secret} leaked into the hook's environment"
    payload = json.loads((out / "notice.json").read_text())
    assert INSTANCE_ID in json.dumps(payload)

    # Under journald the log carries structured fields, not just text.
    raw = box.exec("journalctl", "--no-pager", "-o", "json", "-u", UNIT).stdout
    entries = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    hook_done = [e for e in entries if e.get("HOOK") == "50-record" and e.get("OUTCOME") == "ok"]
    assert hook_done, f"no journal entry with HOOK=50-record OUTCOME=ok\n{box.diagnose()}"
    assert hook_done[0]["NOTICE_ID"] == env["PREEMPT_EVENT_ID"]
    assert hook_done[0]["SYSLOG_IDENTIFIER"] == "preempt-agent"
    noticed = [e for e in entries if e.get("KIND") == "spot-interruption" and e.get("PROVIDER")]
    assert noticed and noticed[0]["PROVIDER"] == "aws"
    box.done.add("drained")


def test_upgrade_keeps_the_changed_config(
    box: Container, mock: Mock, upgrade_deb: Packages
) -> None:
    box.require("drained")
    mock.call(
        "PUT", "/__mock__/path", {"path": "/latest/meta-data/spot/instance-action", "body": None}
    )
    box.ok("systemctl", "start", UNIT)
    wait_for(
        "the agent to watch again",
        lambda: box.show("StatusText")["StatusText"].startswith("watching aws"),
        30,
    )
    config = box.root / "etc/preempt-agent/agent.toml"
    changed = TEST_CONFIG + '\n# changed before the upgrade\nlog_level = "debug"\n'
    config.write_text(changed)
    before = box.show("MainPID")["MainPID"]

    box.ok("dpkg", "-i", f"/root/pkgs/{upgrade_deb.deb.name}", timeout=300)
    version = box.ok("dpkg-query", "-W", "-f=${Version}", "preempt-agent")
    assert version == upgrade_deb.version
    assert config.read_text() == changed
    assert box.ok("preempt-agent", "--version").strip().endswith(upgrade_deb.version)
    assert box.exec("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    wait_for(
        "the restarted agent",
        lambda: box.show("StatusText")["StatusText"].startswith("watching aws"),
        30,
    )
    props = box.show("ActiveState", "MainPID", "NRestarts")
    assert props["ActiveState"] == "active", box.diagnose()
    assert props["MainPID"] != before, "the upgrade did not restart the running agent"
    assert props["NRestarts"] == "0"
    box.done.add("upgraded")


def test_hardening_dropin_keeps_the_agent_working(box: Container) -> None:
    """The opt-in sandbox of the docs: the agent still starts, reaches READY and watches."""
    box.require("upgraded")
    example = box.root / "usr/share/doc/preempt-agent/examples/hardening.conf.example"
    dropin = box.root / f"etc/systemd/system/{UNIT}.d/hardening.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(example, dropin)
    try:
        box.ok("systemctl", "daemon-reload")
        box.ok("systemctl", "restart", UNIT)
        wait_for(
            "the sandboxed agent to watch",
            lambda: box.show("StatusText")["StatusText"].startswith("watching aws"),
            30,
        )
        props = box.show("ActiveState", "ProtectSystem", "PrivateTmp", "NoNewPrivileges")
        assert props == {
            "ActiveState": "active",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "NoNewPrivileges": "yes",
        }, box.diagnose()
        exposure = box.exec("systemd-analyze", "security", "--no-pager", UNIT).stdout
        print("hardened:", exposure.strip().splitlines()[-1] if exposure.strip() else "?")
    finally:
        dropin.unlink()
        dropin.parent.rmdir()
        box.ok("systemctl", "daemon-reload")
    box.ok("systemctl", "restart", UNIT)
    wait_for(
        "the unconfined agent to watch again",
        lambda: box.show("StatusText")["StatusText"].startswith("watching aws"),
        30,
    )
    assert box.show("ProtectSystem")["ProtectSystem"] == "no"
    exposure = box.exec("systemd-analyze", "security", "--no-pager", UNIT).stdout
    print("default:", exposure.strip().splitlines()[-1] if exposure.strip() else "?")
    box.done.add("hardening")


def test_remove_reinstall_and_purge(box: Container, upgrade_deb: Packages) -> None:
    box.require("upgraded")
    root = box.root
    wants = root / "etc/systemd/system/multi-user.target.wants" / UNIT

    box.ok("dpkg", "--remove", "preempt-agent", timeout=300)
    assert box.show("ActiveState", "LoadState") == {
        "ActiveState": "inactive",
        "LoadState": "not-found",
    }, box.diagnose()
    assert not wants.exists() and not wants.is_symlink(), "still enabled after remove"
    assert not (root / "lib/systemd/system" / UNIT).exists()
    assert not (root / "usr/lib/preempt-agent").exists(), list(
        (root / "usr/lib/preempt-agent").rglob("*")
    )[:5]
    assert not (root / "usr/bin/preempt-agent").exists()
    assert (root / "etc/preempt-agent/agent.toml").exists(), "remove must keep the config"
    assert (root / "etc/preempt-agent/hooks.d/50-record").exists()

    # Installing again after a remove is a fresh install: enabled and started.
    box.ok("dpkg", "-i", f"/root/pkgs/{upgrade_deb.deb.name}", timeout=300)
    assert box.exec("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"
    assert box.show("ActiveState")["ActiveState"] == "active", box.diagnose()

    box.ok("dpkg", "--purge", "preempt-agent", timeout=300)
    assert box.show("ActiveState", "LoadState") == {
        "ActiveState": "inactive",
        "LoadState": "not-found",
    }
    for gone in (
        "etc/preempt-agent",
        "var/lib/preempt-agent",
        "usr/lib/preempt-agent",
        "usr/bin/preempt-agent",
        "lib/systemd/system/preempt-agent.service",
        "usr/share/doc/preempt-agent",
    ):
        assert not (root / gone).exists(), f"/{gone} left after purge"
    assert not wants.is_symlink()
    status = box.exec("dpkg-query", "-W", "-f=${Status}", "preempt-agent").stdout
    assert "installed" not in status.replace("not-installed", ""), status
    failed = box.exec("systemctl", "--failed", "--no-legend", "--plain").stdout
    assert UNIT not in failed
    box.done.add("purged")
