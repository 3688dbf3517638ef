"""The systemd unit and the opt-in hardening drop-in: systemd-analyze verify and the contract."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent import exitcodes
from tests.packaging.support import SYSTEMD, UNIT, need

HARDENING = SYSTEMD / "hardening.conf.example"

# Directives that give the service a private mount namespace, hide paths or block
# privilege changes: each breaks some root drain hook, so they are opt-in only.
OPT_IN_ONLY = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "NoNewPrivileges",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "RestrictNamespaces",
    "MemoryDenyWriteExecute",
    "SystemCallFilter",
    "CapabilityBoundingSet",
    "RestrictAddressFamilies",
)


def directives(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{section: [(key, value), ...]} in file order; repeated keys are kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in directives(path).get(section, []) if k == key]


def one(path: Path, section: str, key: str) -> str:
    found = values(path, section, key)
    assert len(found) == 1, f"{section}/{key}: expected one value, got {found}"
    return found[0]


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0, "m": 60.0}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return int(value[: -len(suffix)]) * factor
    assert value.isdigit(), f"unsupported time span {value!r}"
    return float(value)


def verify_root(tmp_path: Path, dropin: bool) -> tuple[Path, str]:
    """A minimal root for ``systemd-analyze verify --root``: the host's units, a stub binary."""
    host_units = next(
        (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
        None,
    )
    if host_units is None:
        pytest.skip("no systemd unit directory on this host")
    root = tmp_path / "root"
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    stub = root / "usr/bin/preempt-agent"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = root / "etc/systemd/system/preempt-agent.service"
    unit.parent.mkdir(parents=True)
    shutil.copy(UNIT, unit)
    if dropin:
        conf = root / "etc/systemd/system/preempt-agent.service.d/hardening.conf"
        conf.parent.mkdir(parents=True)
        shutil.copy(HARDENING, conf)
    return root, "/etc/systemd/system/preempt-agent.service"


@pytest.mark.parametrize("dropin", [False, True], ids=["unit", "unit+hardening"])
def test_systemd_analyze_verify(tmp_path: Path, dropin: bool) -> None:
    need("systemd-analyze")
    root, unit = verify_root(tmp_path, dropin)
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", "--generators=no", unit],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    # verify exits 0 on unknown keys and unparsable values: it only logs them.
    assert proc.returncode == 0, output
    assert output == "", f"systemd-analyze verify complained:\n{output}"


def test_notify_service_with_watchdog() -> None:
    assert one(UNIT, "Service", "Type") == "notify"
    assert one(UNIT, "Service", "NotifyAccess") == "main"
    assert one(UNIT, "Service", "ExecStart") == "/usr/bin/preempt-agent run"
    assert 0 < seconds(one(UNIT, "Service", "WatchdogSec")) <= 120
    assert one(UNIT, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in " ".join(values(UNIT, "Unit", "Wants"))
    assert "network-online.target" in " ".join(values(UNIT, "Unit", "After"))


def test_restart_policy_matches_exit_codes() -> None:
    assert one(UNIT, "Service", "Restart") == "on-failure"
    assert seconds(one(UNIT, "Service", "RestartSec")) <= 10
    prevent = set(one(UNIT, "Service", "RestartPreventExitStatus").split())
    final = {
        exitcodes.FINISHED,
        exitcodes.NOT_CONFIRMED,
        exitcodes.UNSUPPORTED,
        exitcodes.ALREADY_RUNNING,
        exitcodes.CONFIG,
    }
    assert {str(code) for code in final} <= prevent
    assert str(exitcodes.FAILURE) not in prevent, "exit 1 must be restarted"
    burst = int(one(UNIT, "Unit", "StartLimitBurst"))
    interval = seconds(one(UNIT, "Unit", "StartLimitIntervalSec"))
    assert burst >= 3
    assert interval >= burst * seconds(one(UNIT, "Service", "RestartSec"))


def test_stop_is_bounded_and_mixed() -> None:
    assert one(UNIT, "Service", "KillMode") == "mixed"
    assert 0 < seconds(one(UNIT, "Service", "TimeoutStopSec")) <= 90
    assert one(UNIT, "Service", "StateDirectory") == "preempt-agent"
    # /etc/preempt-agent belongs to the package, not to systemd.
    assert not values(UNIT, "Service", "ConfigurationDirectory")


def test_default_unit_leaves_hooks_unconfined() -> None:
    used = {key for key, _ in directives(UNIT)["Service"]}
    assert not used & set(OPT_IN_ONLY), f"opt-in directives in the default unit: {used}"


def test_hardening_dropin_has_the_strict_directives() -> None:
    keys = {key for key, _ in directives(HARDENING)["Service"]}
    for key in ("ProtectSystem", "PrivateTmp", "NoNewPrivileges", "ProtectHome"):
        assert key in keys
    assert one(HARDENING, "Service", "ProtectSystem") == "strict"
    text = HARDENING.read_text(encoding="utf-8")
    # Every directive is documented with what it breaks.
    for key in keys - {"ReadWritePaths", "SystemCallErrorNumber"}:
        before = text.split(f"\n{key}=")[0].rsplit("\n\n", 1)[-1]
        assert "Break" in before or "break" in before, f"{key}: no 'breaks' note above it"
