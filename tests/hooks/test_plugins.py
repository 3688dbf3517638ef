"""Python plugins through a real entry point, run by the hook runner in their own process."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import agent
from agent import notice as n
from agent.clock import Clock
from agent.hooks import DRAIN, RESUME, Hook, plugins
from agent.hooks.runner import FAILED, OK, TIMEOUT, HookRunner
from agent.notice import Notice

REPO = Path(agent.__file__).resolve().parents[1]
MODULES = ("preempt_agent_testplugin", "preempt_agent_brokenplugin")

PLUGIN_MODULE = '''
import json
import os
import sys
import time


def _report(name, notice, context):
    path = os.path.join(os.environ["OUT"], name + ".json")
    with open(path, "w") as handle:
        json.dump({"notice": notice, "context": context}, handle)


def drain(notice, context):
    """A plain function: the simplest plugin."""
    _report("simple", notice, context)
    print("simple plugin drained", notice["instance_id"])
    print("to stderr too", file=sys.stderr)


class Cordon:
    kinds = ["spot-interruption", "rebalance-recommendation"]
    timeout = 7

    def drain(self, notice, context):
        _report("cordon-drain", notice, context)
        return 0

    def resume(self, notice, context):
        _report("cordon-resume", notice, context)
        return 0


cordon = Cordon()


def exits_three(notice, context):
    return 3


def returns_true(notice, context):
    return True


def returns_false(notice, context):
    return False


def returns_text(notice, context):
    return "done"


def raises(notice, context):
    raise RuntimeError("the cluster API is down")


def hangs(notice, context):
    print("hanging", flush=True)
    time.sleep(60)


class BadKinds:
    kinds = ["spot-interruption", "preempted"]

    def drain(self, notice, context):
        return 0


not_callable = 42
'''

ENTRY_POINTS = """
[preempt_agent.hooks]
t-simple = preempt_agent_testplugin:drain
t-cordon = preempt_agent_testplugin:cordon
t-three = preempt_agent_testplugin:exits_three
t-true = preempt_agent_testplugin:returns_true
t-false = preempt_agent_testplugin:returns_false
t-text = preempt_agent_testplugin:returns_text
t-raises = preempt_agent_testplugin:raises
t-hangs = preempt_agent_testplugin:hangs
t-badkinds = preempt_agent_testplugin:BadKinds
t-notcallable = preempt_agent_testplugin:not_callable
t-broken = preempt_agent_brokenplugin:drain
t-missing = preempt_agent_testplugin:no_such_function
"""


def add_distribution(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points), encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path holding an installed-looking plugin distribution."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "preempt_agent_testplugin.py").write_text(PLUGIN_MODULE, encoding="utf-8")
    (folder / "preempt_agent_brokenplugin.py").write_text(
        "import preempt_agent_no_such_dependency\n", encoding="utf-8"
    )
    add_distribution(folder, "preempt_agent_testplugin", ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield folder
    for module in MODULES:
        sys.modules.pop(module, None)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def ours(items: list) -> dict:
    return {x.name: x for x in items if x.name.startswith("plugin:t-")}


def make_notice() -> Notice:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return Notice(
        provider="aws",
        kind=n.SPOT_INTERRUPTION,
        action="terminate",
        instance_id="i-0123456789abcdef0",
        event_id="aws:i-0123456789abcdef0:spot-interruption",
        deadline=now + timedelta(minutes=2),
        raw='{"action": "terminate"}',
        detected_at=now,
    )


def runner_for(site: Path, out: Path) -> HookRunner:
    env = {
        "PATH": os.defpath,
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
        "OUT": str(out),
    }
    return HookRunner(Clock(), kill_grace=0.3, base_env=env)


def run(
    runner: HookRunner, hooks: list[Hook], phase: str = DRAIN, notice: Notice | None = None
) -> list:
    notice = notice or make_notice()
    end = time.monotonic() + 30
    return runner.run(hooks, notice, phase, end, notice.deadline)  # type: ignore[arg-type]


# -- discovery ----------------------------------------------------------------------------------


def test_discover_finds_the_entry_points(site: Path) -> None:
    hooks, _ = plugins.discover()
    found = ours(hooks)
    assert sorted(found) == [
        "plugin:t-cordon",
        "plugin:t-false",
        "plugin:t-hangs",
        "plugin:t-raises",
        "plugin:t-simple",
        "plugin:t-text",
        "plugin:t-three",
        "plugin:t-true",
    ]
    simple = found["plugin:t-simple"]
    assert simple.argv == (sys.executable, "-m", "agent.hooks.plugin_host", "t-simple")
    assert simple.origin == "preempt_agent_testplugin:drain"
    assert simple.kinds == {n.SPOT_INTERRUPTION, n.ASG_TERMINATION}
    assert simple.timeout is None
    assert simple.resume is False


def test_kinds_timeout_and_resume_are_read_from_the_plugin(site: Path) -> None:
    cordon = ours(plugins.discover()[0])["plugin:t-cordon"]
    assert cordon.kinds == {n.SPOT_INTERRUPTION, n.REBALANCE_RECOMMENDATION}
    assert cordon.timeout == 7.0
    assert cordon.resume is True
    assert cordon.handles(n.REBALANCE_RECOMMENDATION, RESUME)
    assert not cordon.handles(n.ASG_TERMINATION, DRAIN)


def test_broken_plugins_are_refused_with_a_reason_and_the_rest_load(site: Path) -> None:
    hooks, refused = plugins.discover()
    reasons = {r.name: r.reason for r in ours(refused).values()}
    assert set(reasons) == {
        "plugin:t-broken",
        "plugin:t-missing",
        "plugin:t-badkinds",
        "plugin:t-notcallable",
    }
    assert reasons["plugin:t-broken"].startswith(
        "cannot load preempt_agent_brokenplugin:drain: ModuleNotFoundError: "
    )
    assert "preempt_agent_no_such_dependency" in reasons["plugin:t-broken"]
    assert reasons["plugin:t-missing"].startswith(
        "cannot load preempt_agent_testplugin:no_such_function: AttributeError"
    )
    assert "ValueError: unknown kinds ['preempted']" in reasons["plugin:t-badkinds"]
    assert reasons["plugin:t-notcallable"] == (
        "cannot load preempt_agent_testplugin:not_callable: "
        "ValueError: neither callable nor has drain()"
    )
    assert "plugin:t-simple" in ours(hooks)


def test_no_plugins_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    importlib.invalidate_caches()
    assert plugins.discover() == ([], [])


def test_load_unknown_name(site: Path) -> None:
    with pytest.raises(LookupError, match=r"no preempt_agent\.hooks entry point named 'nope'"):
        plugins.load("nope")


# -- running through the runner -----------------------------------------------------------------


def test_plugin_runs_as_a_process_with_the_notice_and_context(
    site: Path, out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    simple = ours(plugins.discover()[0])["plugin:t-simple"]
    notice = make_notice()
    with caplog.at_level(logging.INFO, logger="agent.hooks.runner"):
        (result,) = run(runner_for(site, out), [simple], notice=notice)
    assert (result.outcome, result.exit_code) == (OK, 0)
    report = json.loads((out / "simple.json").read_text())
    assert report["notice"] == notice.to_dict()
    context = report["context"]
    assert set(context) == {
        "PREEMPT_PROVIDER",
        "PREEMPT_KIND",
        "PREEMPT_ACTION",
        "PREEMPT_INSTANCE_ID",
        "PREEMPT_DEADLINE",
        "PREEMPT_SECONDS_LEFT",
        "PREEMPT_HOOK_TIMEOUT",
        "PREEMPT_EVENT_ID",
        "PREEMPT_PHASE",
        "PREEMPT_DRY_RUN",
    }
    assert context["PREEMPT_PHASE"] == "drain"
    assert context["PREEMPT_INSTANCE_ID"] == "i-0123456789abcdef0"
    assert "[plugin:t-simple] simple plugin drained i-0123456789abcdef0" in caplog.messages
    assert "[plugin:t-simple] to stderr too" in caplog.messages


def test_plugin_resume_phase(site: Path, out: Path) -> None:
    cordon = ours(plugins.discover()[0])["plugin:t-cordon"]
    (result,) = run(runner_for(site, out), [cordon], phase=RESUME)
    assert result.outcome == OK
    assert json.loads((out / "cordon-resume.json").read_text())["context"]["PREEMPT_PHASE"] == (
        "resume"
    )
    assert not (out / "cordon-drain.json").exists()


@pytest.mark.parametrize(
    ("name", "outcome", "code"),
    [
        ("t-three", FAILED, 3),
        ("t-raises", FAILED, 1),
        ("t-text", OK, 0),
        ("t-true", OK, 0),
        ("t-false", FAILED, 1),
    ],
)
def test_plugin_exit_codes(site: Path, out: Path, name: str, outcome: str, code: int) -> None:
    hook = ours(plugins.discover()[0])[f"plugin:{name}"]
    (result,) = run(runner_for(site, out), [hook])
    assert (result.outcome, result.exit_code) == (outcome, code)


def test_plugin_exception_is_logged_and_the_next_hook_runs(
    site: Path, out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    found = ours(plugins.discover()[0])
    with caplog.at_level(logging.INFO, logger="agent.hooks.runner"):
        results = run(runner_for(site, out), [found["plugin:t-raises"], found["plugin:t-simple"]])
    assert [r.outcome for r in results] == [FAILED, OK]
    assert "[plugin:t-raises] RuntimeError: the cluster API is down" in caplog.messages


def test_hanging_plugin_is_killed_at_its_timeout(site: Path, out: Path) -> None:
    hook = ours(plugins.discover()[0])["plugin:t-hangs"]
    hook = Hook(hook.name, hook.argv, hook.origin, hook.kinds, timeout=1.0)
    (result,) = run(runner_for(site, out), [hook])
    assert result.outcome == TIMEOUT
    assert result.duration < 1.0 + 0.3 + 1.5


# -- the host process itself --------------------------------------------------------------------


def host(site: Path, out: Path, *args: str, stdin: str = "{}") -> subprocess.CompletedProcess:
    env = {
        "PATH": os.defpath,
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
        "OUT": str(out),
        "PREEMPT_KIND": "spot-interruption",
        "NOT_CONTEXT": "x",
    }
    return subprocess.run(
        [sys.executable, "-m", "agent.hooks.plugin_host", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=30,
        check=False,
    )


def test_host_usage_errors(site: Path, out: Path) -> None:
    assert host(site, out).returncode == 2
    assert host(site, out, "t-simple").returncode == 2
    bad = host(site, out, "t-simple", "reboot")
    assert bad.returncode == 2
    assert "usage: python -m agent.hooks.plugin_host NAME drain|resume" in bad.stderr


def test_host_passes_only_preempt_variables(site: Path, out: Path) -> None:
    done = host(site, out, "t-simple", "drain", stdin='{"instance_id": "i-9"}')
    assert done.returncode == 0
    assert done.stdout == "simple plugin drained i-9\n"
    report = json.loads((out / "simple.json").read_text())
    assert report == {
        "notice": {"instance_id": "i-9"},
        "context": {"PREEMPT_KIND": "spot-interruption"},
    }


def test_host_phase_the_plugin_lacks(site: Path, out: Path) -> None:
    done = host(site, out, "t-simple", "resume")
    assert done.returncode == 1
    assert "plugin t-simple has no resume()" in done.stderr


def test_host_unknown_plugin_is_exit_1_with_a_traceback(site: Path, out: Path) -> None:
    done = host(site, out, "t-nope", "drain")
    assert done.returncode == 1
    assert "LookupError: no preempt_agent.hooks entry point named 't-nope'" in done.stderr


# -- plugin code never runs inside the agent ----------------------------------------------------

ISOLATION_PLUGINS = {
    "preempt_agent_exits_on_import": "import sys\nsys.exit(3)\n",
    "preempt_agent_hangs_on_import": "import time\ntime.sleep(60)\n",
    "preempt_agent_odd_attributes": (
        "def drain(notice, context):\n    return 0\n"
        "class Everything:\n    kinds = 'all'\n"
        "    def drain(self, notice, context):\n        return 0\n"
        "everything = Everything()\n"
        "class BadTimeout:\n    timeout = '30s'\n"
        "    def drain(self, notice, context):\n        return 0\n"
        "bad_timeout = BadTimeout()\n"
    ),
}


def isolation_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_hang: bool) -> None:
    folder = tmp_path / "isolation-site"
    folder.mkdir()
    for module, text in ISOLATION_PLUGINS.items():
        (folder / f"{module}.py").write_text(text, encoding="utf-8")
    entry_points = (
        "[preempt_agent.hooks]\n"
        "i-exits = preempt_agent_exits_on_import:drain\n"
        "i-everything = preempt_agent_odd_attributes:everything\n"
        "i-badtimeout = preempt_agent_odd_attributes:bad_timeout\n"
        "i-fine = preempt_agent_odd_attributes:drain\n"
    ) + ("i-hangs = preempt_agent_hangs_on_import:drain\n" if with_hang else "")
    add_distribution(folder, "preempt_agent_isolation", entry_points)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()


def test_odd_plugins_are_refused_one_by_one_without_running_in_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolation_site(tmp_path, monkeypatch, with_hang=False)
    hooks, refused = plugins.discover()
    found = {h.name: h for h in hooks if h.name.startswith("plugin:i-")}
    reasons = {r.name: r.reason for r in refused if r.name.startswith("plugin:i-")}
    assert sorted(found) == ["plugin:i-everything", "plugin:i-fine"]
    assert found["plugin:i-everything"].kinds == frozenset(n.KINDS), "kinds = 'all' as for scripts"
    assert "SystemExit: 3" in reasons["plugin:i-exits"]
    assert "ValueError: could not convert string to float: '30s'" in reasons["plugin:i-badtimeout"]
    assert not {m for m in sys.modules if m.startswith("preempt_agent_")} & set(ISOLATION_PLUGINS)


def test_a_plugin_import_that_hangs_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolation_site(tmp_path, monkeypatch, with_hang=True)
    started = time.monotonic()
    hooks, refused = plugins.discover(timeout=1.0)
    assert time.monotonic() - started < 5
    assert [h for h in hooks if h.name.startswith("plugin:i-")] == []
    assert [r.name for r in refused] == ["plugins"]
    assert "took more than 1 s" in refused[0].reason
