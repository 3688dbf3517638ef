"""The hook runner with real processes: context, output, failures, timeouts, kills, deadline."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import pytest

from agent import notice as n
from agent.clock import Clock
from agent.hooks import Hook
from agent.hooks import runner as runner_module
from agent.hooks.runner import (
    ERROR,
    FAILED,
    OK,
    SKIPPED,
    TIMEOUT,
    HookResult,
    HookRunner,
    hook_deadline,
)
from agent.notice import Notice
from tests.waiting import process_gone, wait_until

UTC = timezone.utc
LOGGER = "agent.hooks.runner"


class FixedWallClock(Clock):
    """Real monotonic time (processes really run) but a wall clock that stands still."""

    def __init__(self, now: datetime) -> None:
        super().__init__()
        self.fixed = now

    def now(self) -> datetime:
        return self.fixed


def make_notice(
    raw: str = '{"action": "terminate"}', deadline: Optional[datetime] = None
) -> Notice:
    now = datetime.now(UTC)
    return Notice(
        provider="aws",
        kind=n.SPOT_INTERRUPTION,
        action="terminate",
        instance_id="i-0123456789abcdef0",
        event_id="aws:i-0123456789abcdef0:spot-interruption",
        deadline=deadline or now + timedelta(minutes=2),
        raw=raw,
        detected_at=now,
    )


def script(folder: Path, name: str, body: str, timeout: Optional[float] = None) -> Hook:
    """An executable /bin/sh hook; ``body`` may use $OUT, a folder for what it reports."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(0o755)
    return Hook(name=name, argv=(str(path),), origin=str(path), timeout=timeout)


def python_hook(folder: Path, name: str, body: str) -> Hook:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
    path.chmod(0o755)
    return Hook(name=name, argv=(str(path),), origin=str(path))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "hooks.d"
    folder.mkdir()
    return folder


@pytest.fixture
def runner(out: Path) -> HookRunner:
    return HookRunner(Clock(), kill_grace=0.3, base_env={"PATH": os.defpath, "OUT": str(out)})


def run(
    runner: HookRunner,
    hooks: list[Hook],
    *,
    seconds: float = 20.0,
    notice: Optional[Notice] = None,
    **kwargs: object,
) -> list[HookResult]:
    notice = notice or make_notice()
    end = time.monotonic() + seconds
    return runner.run(hooks, notice, "drain", end, notice.deadline, **kwargs)  # type: ignore[arg-type]


# -- what a hook is given -----------------------------------------------------------------------

REPORT = """\
import json, os, sys
with open(os.path.join(os.environ["OUT"], "report.json"), "w") as handle:
    json.dump({"env": dict(os.environ), "argv": sys.argv[1:], "stdin": sys.stdin.read()}, handle)
"""


def test_variables_argv_and_stdin(hooks_dir: Path, out: Path) -> None:
    wall = datetime(2017, 9, 18, 8, 20, 0, 400000, tzinfo=UTC)
    east = timezone(timedelta(hours=8))
    deadline = datetime(2017, 9, 18, 16, 21, 35, 900000, tzinfo=east)  # 95.5 s after `wall`
    notice = make_notice(deadline=deadline)
    hook = python_hook(hooks_dir, "10-report", REPORT)
    hook = Hook(hook.name, hook.argv, hook.origin, timeout=12.9)
    runner = HookRunner(FixedWallClock(wall), kill_grace=1, base_env={"OUT": str(out)})
    (result,) = runner.run([hook], notice, "drain", time.monotonic() + 60, deadline)
    assert result.outcome == OK
    report = json.loads((out / "report.json").read_text())
    preempt = {k: v for k, v in report["env"].items() if k.startswith("PREEMPT_")}
    assert preempt == {
        "PREEMPT_PROVIDER": "aws",
        "PREEMPT_KIND": "spot-interruption",
        "PREEMPT_ACTION": "terminate",
        "PREEMPT_INSTANCE_ID": "i-0123456789abcdef0",
        "PREEMPT_DEADLINE": "2017-09-18T08:21:35Z",
        "PREEMPT_SECONDS_LEFT": "95",
        "PREEMPT_HOOK_TIMEOUT": "12",
        "PREEMPT_EVENT_ID": "aws:i-0123456789abcdef0:spot-interruption",
        "PREEMPT_PHASE": "drain",
        "PREEMPT_DRY_RUN": "0",
    }
    assert report["argv"] == ["drain"]
    assert json.loads(report["stdin"]) == notice.to_dict()
    assert report["stdin"].endswith("\n")
    assert result.started == "2017-09-18T08:20:00Z"


def test_dry_run_resume_phase_and_a_past_deadline(hooks_dir: Path, out: Path) -> None:
    wall = datetime(2017, 9, 18, 8, 20, tzinfo=UTC)
    hook = python_hook(hooks_dir, "10-report", REPORT)
    runner = HookRunner(FixedWallClock(wall), kill_grace=1, base_env={"OUT": str(out)})
    past = wall - timedelta(seconds=30)
    runner.run(
        [hook], make_notice(deadline=past), "resume", time.monotonic() + 7.5, past, dry_run=True
    )
    report = json.loads((out / "report.json").read_text())
    assert report["argv"] == ["resume"]
    assert report["env"]["PREEMPT_PHASE"] == "resume"
    assert report["env"]["PREEMPT_DRY_RUN"] == "1"
    assert report["env"]["PREEMPT_SECONDS_LEFT"] == "0"
    assert report["env"]["PREEMPT_HOOK_TIMEOUT"] in ("6", "7")


def test_systemd_variables_are_not_inherited(
    hooks_dir: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("KEEP_ME", "kept")
    monkeypatch.setenv("OUT", str(out))
    runner = HookRunner(Clock(), kill_grace=1)  # the agent's own environment
    (result,) = run(runner, [python_hook(hooks_dir, "10-report", REPORT)])
    assert result.outcome == OK
    env = json.loads((out / "report.json").read_text())["env"]
    assert env["KEEP_ME"] == "kept"
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(env)


def test_only_hooks_that_run_agent_code_get_the_agents_import_path(
    hooks_dir: Path, out: Path, runner: HookRunner
) -> None:
    """A packaged agent lives outside the system path: the plugin host must find it, while
    users' script hooks must not see the libraries bundled with it."""
    script_hook = python_hook(hooks_dir, "10-report", REPORT)
    plugin_like = dataclasses.replace(script_hook, name="plugin:report", imports_agent=True)
    (first,) = run(runner, [script_hook])
    script_env = json.loads((out / "report.json").read_text())["env"]
    (second,) = run(runner, [plugin_like])
    plugin_env = json.loads((out / "report.json").read_text())["env"]
    assert first.outcome == second.outcome == OK
    assert "PYTHONPATH" not in script_env
    repo = str(Path(__file__).resolve().parents[2])
    assert repo in plugin_env["PYTHONPATH"].split(os.pathsep)


def test_hooks_run_in_the_root_folder_in_their_own_session(
    runner: HookRunner, hooks_dir: Path, out: Path
) -> None:
    body = (
        "import json, os\n"
        "where = [os.getcwd(), os.getpid(), os.getsid(0), os.getpgid(0)]\n"
        "json.dump(where, open(os.path.join(os.environ['OUT'], 'where'), 'w'))\n"
    )
    (result,) = run(runner, [python_hook(hooks_dir, "10-where", body)])
    assert result.outcome == OK
    cwd, pid, sid, pgid = json.loads((out / "where").read_text())
    assert cwd == "/"
    assert sid == pid == pgid
    assert sid != os.getsid(0)


# -- output -------------------------------------------------------------------------------------


def test_output_is_logged_line_by_line_with_the_hook_name(
    runner: HookRunner, hooks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = "echo 'cordoning node'\necho 'oops' >&2\nprintf 'no newline at the end'\n"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        (result,) = run(runner, [script(hooks_dir, "10-cordon", body)])
    assert result.outcome == OK
    lines = [r for r in caplog.records if r.getMessage().startswith("[10-cordon] ")]
    assert [r.getMessage() for r in lines] == [
        "[10-cordon] cordoning node",
        "[10-cordon] oops",
        "[10-cordon] no newline at the end",
    ]
    assert all(getattr(r, "HOOK", None) == "10-cordon" for r in lines)
    assert all(getattr(r, "NOTICE_ID", None) == make_notice().event_id for r in lines)


def test_output_is_logged_while_the_hook_still_runs(
    runner: HookRunner, hooks_dir: Path, out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The hook says one line, then waits for the test to have seen it in the log.
    body = (
        "echo first\n"
        "i=0\n"
        'while [ ! -e "$OUT/go" ] && [ $i -lt 100 ]; do sleep 0.02; i=$((i+1)); done\n'
        '[ -e "$OUT/go" ] && echo second\n'
    )

    def release() -> None:
        wait_until(lambda: "[10-stream] first" in caplog.messages, 10, "the first line")
        (out / "go").touch()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        watcher = threading.Thread(target=release, daemon=True)
        watcher.start()
        (result,) = run(runner, [script(hooks_dir, "10-stream", body, timeout=10)])
        watcher.join(5)
    assert result.outcome == OK
    assert "[10-stream] second" in caplog.messages


def test_odd_output_is_made_readable(
    runner: HookRunner, hooks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = "import sys\nsys.stdout.buffer.write(b'caf\\xe9\\r\\n' + b'x' * 20000 + b'\\n')\n"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(runner, [python_hook(hooks_dir, "10-odd", body)])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[10-odd] ")]
    assert lines[0] == "[10-odd] caf\ufffd"
    assert lines[1] == "[10-odd] " + "x" * 8192


def test_start_and_outcome_are_logged(
    runner: HookRunner, hooks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(
            runner,
            [script(hooks_dir, "10-ok", "exit 0\n"), script(hooks_dir, "20-bad", "exit 4\n")],
        )
    messages = caplog.messages
    assert any(m.startswith("hook 10-ok: started (drain, ") for m in messages)
    assert any(re.fullmatch(r"hook 10-ok: ok after \d+\.\d s", m) for m in messages)
    bad = [r for r in caplog.records if r.getMessage().startswith("hook 20-bad: failed")]
    assert bad[0].levelno == logging.WARNING
    assert re.fullmatch(r"hook 20-bad: failed after \d+\.\d s \(exit code 4\)", bad[0].getMessage())
    assert bad[0].OUTCOME == "failed"  # type: ignore[attr-defined]


# -- outcomes -----------------------------------------------------------------------------------


def test_a_failing_hook_does_not_stop_the_next(
    runner: HookRunner, hooks_dir: Path, out: Path
) -> None:
    hooks = [
        script(hooks_dir, "10-fails", "exit 3\n"),
        script(hooks_dir, "20-crashes", "kill -9 $$\n"),
        script(hooks_dir, "30-noexec", "exit 126\n"),
        script(hooks_dir, "40-runs", 'touch "$OUT/ran"\n'),
    ]
    results = run(runner, hooks)
    assert [(r.hook, r.outcome, r.exit_code, r.detail) for r in results] == [
        ("10-fails", FAILED, 3, "exit code 3"),
        ("20-crashes", FAILED, -9, "killed by signal 9"),
        ("30-noexec", FAILED, 126, "exit 126: could not execute something (noexec mount?)"),
        ("40-runs", OK, 0, ""),
    ]
    assert (out / "ran").exists()
    assert all(r.duration >= 0 for r in results)


def test_missing_shebang_is_an_error_with_a_hint(runner: HookRunner, hooks_dir: Path) -> None:
    path = hooks_dir / "10-no-shebang"
    path.write_text("echo hello\n", encoding="utf-8")
    path.chmod(0o755)
    hook = Hook("10-no-shebang", (str(path),), str(path))
    after = script(hooks_dir, "20-next", "exit 0\n")
    first, second = run(runner, [hook, after])
    assert first.outcome == ERROR
    assert first.exit_code is None
    assert first.detail == "cannot execute: Exec format error; is the #! line missing?"
    assert second.outcome == OK


def test_unexecutable_and_missing_files_are_errors(runner: HookRunner, hooks_dir: Path) -> None:
    plain = hooks_dir / "10-plain"
    plain.write_text("#!/bin/sh\n", encoding="utf-8")
    plain.chmod(0o644)
    hooks = [
        Hook("10-plain", (str(plain),), str(plain)),
        Hook("20-gone", (str(hooks_dir / "20-gone"),), "gone"),
    ]
    first, second = run(runner, hooks)
    assert (first.outcome, second.outcome) == (ERROR, ERROR)
    assert first.detail == "cannot execute: Permission denied; is the folder on a noexec mount?"
    assert second.detail == "cannot execute: No such file or directory"


def test_callbacks_per_hook(runner: HookRunner, hooks_dir: Path, out: Path) -> None:
    """on_start gets the hook's process group id (recorded, to end it after a restart), and
    only for a hook that started: one that could not is an error with no on_start."""
    started: list[tuple[str, int]] = []
    finished: list[tuple[str, str]] = []
    hooks = [
        script(hooks_dir, "10-a", 'echo "$(ps -o pgid= $$)" > "$OUT/pgid"\nexit 0\n'),
        Hook("15-missing", (str(hooks_dir / "15-missing"),), "gone"),
        script(hooks_dir, "20-b", "exit 1\n"),
    ]
    results = run(
        runner,
        hooks,
        on_start=lambda hook, pgid: started.append((hook.name, pgid)),
        on_result=lambda hook, result: finished.append((hook.name, result.outcome)),
    )
    assert [name for name, _ in started] == ["10-a", "20-b"]
    assert started[0][1] == int((out / "pgid").read_text())
    assert finished == [("10-a", OK), ("15-missing", ERROR), ("20-b", FAILED)]
    assert [r.hook for r in results] == ["10-a", "15-missing", "20-b"]
    assert results[0].to_dict()["outcome"] == "ok"


def test_a_hook_that_never_reads_a_large_stdin_does_not_block(
    runner: HookRunner, hooks_dir: Path, out: Path
) -> None:
    notice = make_notice(raw="x" * 2_000_000)
    ignores = script(hooks_dir, "10-ignores-stdin", "exit 0\n", timeout=5)
    reads = script(hooks_dir, "20-reads-stdin", 'wc -c > "$OUT/size"\n', timeout=5)
    first, second = run(runner, [ignores, reads], notice=notice)
    assert (first.outcome, second.outcome) == (OK, OK)
    assert first.duration < 4
    assert int((out / "size").read_text()) == len(notice.to_json()) + 1


# -- timeouts and kills -------------------------------------------------------------------------


def test_a_hanging_hook_is_killed_with_its_whole_process_group(
    runner: HookRunner, hooks_dir: Path, out: Path
) -> None:
    body = 'sleep 60 &\necho $! > "$OUT/child"\nwait\n'
    hang = script(hooks_dir, "10-hang", body, timeout=0.5)
    after = script(hooks_dir, "20-after", 'touch "$OUT/after"\n')
    started = time.monotonic()
    first, second = run(runner, [hang, after])
    assert first.outcome == TIMEOUT
    assert first.detail == "its timeout"
    assert 0.4 <= first.duration < 0.5 + 0.3 + 1.5
    child = int((out / "child").read_text())
    wait_until(lambda: process_gone(child), 5, f"background child {child} to end")
    assert second.outcome == OK
    assert (out / "after").exists()
    assert time.monotonic() - started < 3


def test_a_hook_ignoring_sigterm_gets_sigkill_after_the_grace(hooks_dir: Path, out: Path) -> None:
    runner = HookRunner(Clock(), kill_grace=0.4, base_env={"PATH": os.defpath, "OUT": str(out)})
    body = "trap '' TERM\nsleep 60 &\necho $! > \"$OUT/child\"\nwhile :; do wait; done\n"
    (result,) = run(runner, [script(hooks_dir, "10-stubborn", body, timeout=0.5)])
    assert result.outcome == TIMEOUT
    assert result.exit_code == -9
    assert 0.5 + 0.4 - 0.05 <= result.duration < 0.5 + 0.4 + 1.5
    child = int((out / "child").read_text())
    wait_until(lambda: process_gone(child), 5, f"background child {child} to end")


def test_a_hook_that_exits_on_sigterm_is_not_waited_for(hooks_dir: Path) -> None:
    runner = HookRunner(Clock(), kill_grace=10)
    (result,) = run(runner, [script(hooks_dir, "10-hang", "exec sleep 60\n", timeout=0.5)])
    assert result.outcome == TIMEOUT
    assert result.exit_code == -15
    assert result.duration < 3, "the grace is a limit, not a wait"


def test_the_runner_wide_hook_timeout_applies(hooks_dir: Path) -> None:
    runner = HookRunner(Clock(), kill_grace=0.2, hook_timeout=0.5)
    (result,) = run(runner, [script(hooks_dir, "10-hang", "exec sleep 60\n")], seconds=60)
    assert result.outcome == TIMEOUT
    assert result.duration < 2


def test_the_overall_end_skips_later_hooks(
    runner: HookRunner, hooks_dir: Path, out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = [
        script(hooks_dir, "10-slow", "trap '' TERM\nsleep 60\n", timeout=30),
        script(hooks_dir, "20-late", 'touch "$OUT/late"\n'),
        script(hooks_dir, "30-later", 'touch "$OUT/later"\n'),
    ]
    started: list[str] = []
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        results = run(runner, hooks, seconds=0.6, on_start=lambda h, _: started.append(h.name))
    assert [r.outcome for r in results] == [TIMEOUT, SKIPPED, SKIPPED]
    assert results[0].duration < 0.6 + 0.3 + 1.5
    for skipped in results[1:]:
        assert skipped.detail == "no time left before the deadline"
        assert (skipped.exit_code, skipped.duration) == (None, 0.0)
    assert started == ["10-slow"]
    assert not (out / "late").exists()
    assert not (out / "later").exists()
    assert "hook 20-late skipped: no time left before the deadline" in caplog.messages


def test_nothing_runs_once_the_end_has_passed(runner: HookRunner, hooks_dir: Path) -> None:
    results = run(runner, [script(hooks_dir, "10-a", "exit 0\n")], seconds=-1)
    assert [r.outcome for r in results] == [SKIPPED]


def test_cancel_stops_the_running_hook_and_skips_the_rest(
    runner: HookRunner, hooks_dir: Path, out: Path
) -> None:
    cancel = threading.Event()
    hooks = [
        script(hooks_dir, "10-waits", 'touch "$OUT/started"\nexec sleep 60\n', timeout=30),
        script(hooks_dir, "20-never", 'touch "$OUT/never"\n'),
    ]

    def cancel_once_started() -> None:
        wait_until((out / "started").exists, 10, "the hook to start")
        cancel.set()

    threading.Thread(target=cancel_once_started, daemon=True).start()
    first, second = run(runner, hooks, cancel=cancel)
    assert (first.outcome, first.detail) == (TIMEOUT, "run cancelled")
    assert first.duration < 5
    assert (second.outcome, second.detail) == (SKIPPED, "run cancelled")
    assert not (out / "never").exists()


def test_a_cancelled_run_starts_nothing(runner: HookRunner, hooks_dir: Path, out: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    results = run(runner, [script(hooks_dir, "10-a", 'touch "$OUT/a"\n')], cancel=cancel)
    assert [(r.outcome, r.detail) for r in results] == [(SKIPPED, "run cancelled")]
    assert not (out / "a").exists()


# -- the deadline hooks are told ----------------------------------------------------------------


def test_hook_deadline() -> None:
    now = datetime(2017, 9, 18, 8, 20, tzinfo=UTC)
    with_deadline = make_notice(deadline=now + timedelta(seconds=90))
    assert hook_deadline(with_deadline, now, 600) == now + timedelta(seconds=90)
    without = Notice(**{**with_deadline.__dict__, "deadline": None})
    assert hook_deadline(without, now, 600) == now + timedelta(seconds=600)


# -- the end is a hard bound --------------------------------------------------------------------


def test_a_hook_ignoring_sigterm_is_gone_by_the_end(hooks_dir: Path, out: Path) -> None:
    """SIGTERM goes out kill_grace before the end, so SIGKILL lands by the end itself."""
    runner = HookRunner(Clock(), kill_grace=0.5, base_env={"PATH": os.defpath, "OUT": str(out)})
    body = "trap '' TERM\nwhile :; do sleep 0.05; done\n"
    end = time.monotonic() + 1.5
    (result,) = runner.run(
        [script(hooks_dir, "10-stubborn", body)],
        make_notice(),
        "drain",
        end,
        make_notice().deadline,
    )
    finished = time.monotonic()
    assert result.outcome == TIMEOUT and result.exit_code == -9
    assert finished <= end + 0.3, f"the hook outlived the end by {finished - end:.2f} s"


def test_an_end_brought_forward_cuts_the_running_hook(runner: HookRunner, hooks_dir: Path) -> None:
    """A termination with an earlier deadline shortens the hook already running."""
    bound = {"end": time.monotonic() + 60}
    threading.Timer(0.3, lambda: bound.update(end=time.monotonic() + 0.5)).start()
    notice = make_notice()
    started = time.monotonic()
    (result,) = runner.run(
        [script(hooks_dir, "10-long", "exec sleep 60\n")],
        notice,
        "drain",
        lambda: bound["end"],
        notice.deadline,
    )
    assert result.outcome == TIMEOUT
    assert time.monotonic() - started < 3


def test_output_without_newlines_is_read_in_bounded_pieces(
    runner: HookRunner, hooks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flood = "awk 'BEGIN { while (i++ < 100000) printf \"x\" }'\n"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        (result,) = run(runner, [script(hooks_dir, "10-flood", flood)])
    assert result.outcome == OK
    pieces = [m for m in caplog.messages if m.startswith("[10-flood] x")]
    assert len(pieces) == 13, "100000 bytes in pieces of at most 8192"
    assert all(len(m) <= len("[10-flood] ") + 8192 for m in pieces)


# -- stdin without a disk -----------------------------------------------------------------------


@pytest.fixture(params=["memfd", "pipe"])
def stdin_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the notice reaches stdin: a memfd, and the pipe used where there is none."""
    if request.param == "pipe":
        monkeypatch.delattr(os, "memfd_create", raising=False)
    elif not hasattr(os, "memfd_create"):
        pytest.skip("no memfd_create on this system")
    return str(request.param)


def test_the_notice_reaches_stdin_through_memory_not_a_file(
    runner: HookRunner, hooks_dir: Path, out: Path, stdin_kind: str
) -> None:
    body = 'readlink /proc/self/fd/0 > "$OUT/what"\ncat > "$OUT/stdin"\n'
    notice = make_notice()
    (result,) = run(runner, [script(hooks_dir, "10-stdin", body)], notice=notice)
    assert result.outcome == OK
    what = (out / "what").read_text().strip()
    assert what.startswith("/memfd:" if stdin_kind == "memfd" else "pipe:"), what
    assert json.loads((out / "stdin").read_text()) == notice.to_dict()


def test_a_large_stdin_nobody_reads_blocks_nothing(
    runner: HookRunner, hooks_dir: Path, out: Path, stdin_kind: str
) -> None:
    notice = make_notice(raw="x" * 2_000_000)
    ignores = script(hooks_dir, "10-ignores-stdin", "exit 0\n", timeout=5)
    reads = script(hooks_dir, "20-reads-stdin", 'wc -c > "$OUT/size"\n', timeout=5)
    first, second = run(runner, [ignores, reads], notice=notice)
    assert (first.outcome, second.outcome) == (OK, OK)
    assert first.duration < 4
    assert int((out / "size").read_text()) == len(notice.to_json()) + 1


FULL_DISK_RUN = """
import json, logging, sys, time
from datetime import datetime, timedelta, timezone
sys.path.insert(0, sys.argv[1])
import agent
from agent.clock import Clock
from agent.hooks import Hook
from agent.hooks.runner import HookRunner
from agent.notice import Notice

now = datetime.now(timezone.utc)
notice = Notice("aws", "spot-interruption", "terminate", "i-0123456789abcdef0",
                "aws:i-0123456789abcdef0:spot-interruption", now + timedelta(minutes=2),
                "{}", now)
lines = []
handler = logging.Handler()
handler.emit = lambda record: lines.append(record.getMessage())
logging.getLogger("agent").addHandler(handler)
logging.getLogger("agent").setLevel(logging.INFO)
hooks = [Hook(name, ("/bin/sh", "-c", "cat; echo", name), name) for name in ("10-a", "20-b")]
results = HookRunner(Clock(), kill_grace=1).run(
    hooks, notice, "drain", time.monotonic() + 20, notice.deadline)
print(json.dumps({"results": [r.to_dict() for r in results], "lines": lines,
                  "agent": agent.__file__}))
"""


@pytest.mark.root
def test_hooks_run_and_read_the_notice_when_every_temp_folder_is_full() -> None:
    """A full root disk (every folder tempfile would try is full) must not stop a drain."""
    if os.geteuid() != 0:
        pytest.skip("a mount namespace with a full tmpfs needs root")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode:
        pytest.skip("cannot make a mount namespace here (unshare -m failed)")
    fill = (
        "set -e; for d in /tmp /var/tmp; do mount -t tmpfs -o size=16k tmpfs $d; "
        "head -c 1048576 /dev/zero > $d/fill 2>/dev/null || true; done; "
        'cd /tmp; exec "$@"'
    )
    repo = str(Path(__file__).resolve().parents[2])
    if repo.startswith(("/tmp/", "/var/tmp/")):
        pytest.skip(f"{repo} is under a folder this test mounts over")
    python = [sys.executable, "-c", FULL_DISK_RUN, repo]
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", fill, "sh", *python],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": repo},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["agent"].startswith(repo + "/"), "the code under test, not another copy"
    assert [(r["hook"], r["outcome"]) for r in report["results"]] == [("10-a", OK), ("20-b", OK)]
    echoed = [json.loads(line.split("] ", 1)[1]) for line in report["lines"] if "] {" in line]
    assert [e["event_id"] for e in echoed] == ["aws:i-0123456789abcdef0:spot-interruption"] * 2


# -- what a hook leaves behind ------------------------------------------------------------------

ALIVE = """\
import os
def alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
out = os.environ["OUT"]
pids = [int(open(os.path.join(out, name)).read()) for name in ("child", "stubborn")]
open(os.path.join(out, "seen"), "w").write(" ".join("alive" if alive(p) else "gone" for p in pids))
"""


def test_what_a_hook_leaves_in_its_group_is_gone_before_the_next_starts(
    runner: HookRunner, hooks_dir: Path, out: Path
) -> None:
    leaves = script(
        hooks_dir,
        "10-leaves",
        'sleep 60 &\necho $! > "$OUT/child"\n'
        # The child says it is ready only once its trap is set, and the hook waits for that:
        # a SIGTERM before the trap would end it early and leave nothing stubborn to kill.
        '(trap "" TERM; touch "$OUT/trapped"; while :; do sleep 0.05; done) &\n'
        'echo $! > "$OUT/stubborn"\n'
        'while [ ! -e "$OUT/trapped" ]; do sleep 0.01; done\nexit 0\n',
    )
    started = time.monotonic()
    first, second = run(runner, [leaves, python_hook(hooks_dir, "20-looks", ALIVE)])
    assert (first.outcome, first.exit_code) == (OK, 0)
    assert first.detail == "ended what it left running (signal 9)"
    assert (second.outcome, (out / "seen").read_text()) == (OK, "gone gone")
    assert time.monotonic() - started < 0.3 + 3, "SIGKILL after the 0.3 s grace"


def test_a_leftover_that_ends_on_sigterm_is_not_waited_for(hooks_dir: Path, out: Path) -> None:
    runner = HookRunner(Clock(), kill_grace=10, base_env={"PATH": os.defpath, "OUT": str(out)})
    leaves = script(hooks_dir, "10-leaves", 'sleep 60 &\necho $! > "$OUT/child"\n')
    (result,) = run(runner, [leaves], seconds=60)
    assert (result.outcome, result.detail) == (OK, "ended what it left running (signal 15)")
    assert result.duration < 3
    assert process_gone(int((out / "child").read_text()))


# -- the grace comes out of a short window ------------------------------------------------------


def test_a_window_shorter_than_the_grace_still_runs_every_hook(hooks_dir: Path, out: Path) -> None:
    runner = HookRunner(Clock(), kill_grace=10, base_env={"PATH": os.defpath, "OUT": str(out)})
    quick = script(hooks_dir, "10-quick", 'echo "$PREEMPT_HOOK_TIMEOUT" > "$OUT/quick"\n')
    stubborn = script(
        hooks_dir,
        "20-stubborn",
        "trap '' TERM\ntouch \"$OUT/stubborn\"\nwhile :; do sleep 0.05; done\n",
    )
    end = time.monotonic() + 3.0
    notice = make_notice()
    first, second = runner.run([quick, stubborn], notice, "drain", end, notice.deadline)
    finished = time.monotonic()
    assert first.outcome == OK
    assert (out / "quick").read_text().strip() == "1", "half of the 3 s left, the rest is grace"
    assert (second.outcome, second.exit_code) == (TIMEOUT, -9)
    assert (out / "stubborn").exists()
    assert finished <= end + 0.3, f"the hook outlived the end by {finished - end:.2f} s"


# -- the log -------------------------------------------------------------------------------------


def test_the_timeout_line_says_the_time_once(
    runner: HookRunner, hooks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hang = script(hooks_dir, "10-hang", "exec sleep 60\n")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(runner, [dataclasses.replace(hang, timeout=0.5)])
        run(runner, [hang], seconds=1.0)
    lines = [m for m in caplog.messages if m.startswith("hook 10-hang: timeout")]
    assert re.fullmatch(r"hook 10-hang: timeout after 0\.\d s \(its timeout\)", lines[0]), lines
    assert re.fullmatch(r"hook 10-hang: timeout after \d\.\d s \(the run's end\)", lines[1]), lines


def test_what_a_hook_logs_is_capped_and_the_rest_counted(
    runner: HookRunner, hooks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = "import sys\nfor i in range(3000):\n    print(f'line {i}')\nprint('x' * 200000)\n"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        (result,) = run(runner, [python_hook(hooks_dir, "10-chatty", body)])
    assert result.outcome == OK
    logged = [m for m in caplog.messages if m.startswith("[10-chatty] line ")]
    assert len(logged) == runner_module.MAX_LOGGED_LINES
    assert logged[-1] == f"[10-chatty] line {runner_module.MAX_LOGGED_LINES - 1}"
    dropped = 3000 - runner_module.MAX_LOGGED_LINES
    dropped_bytes = sum(len(f"line {i}\n") for i in range(runner_module.MAX_LOGGED_LINES, 3000))
    dropped_bytes += 200001
    pieces = -(-200001 // runner_module.MAX_LINE)
    assert caplog.messages[-2:-1] == [
        f"[10-chatty] {dropped + pieces} more lines ({dropped_bytes} bytes) of output not "
        f"logged: the limit is {runner_module.MAX_LOGGED_LINES} lines or "
        f"{runner_module.MAX_LOGGED_BYTES} bytes per hook"
    ]


def test_a_hook_logs_at_most_so_many_bytes(
    runner: HookRunner, hooks_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = "for i in range(300):\n    print('y' * 999)\n"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run(runner, [python_hook(hooks_dir, "10-wide", body)])
    logged = [m for m in caplog.messages if m.startswith("[10-wide] y")]
    assert len(logged) == runner_module.MAX_LOGGED_BYTES // 1000
    assert any(m.startswith(f"[10-wide] {300 - len(logged)} more lines") for m in caplog.messages)
