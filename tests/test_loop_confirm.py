"""The loop's confirm and withdraw paths, with a scripted cloud and real hook processes.

The cloud's watchers return whatever the test puts in them; confirmation is a function of
the test's. The daemon runs in a thread on the real clock with short poll
intervals; every wait in a test is a bounded wait on a condition.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from agent import exitcodes
from agent import lifecycle as state
from agent.clock import Clock
from agent.clouds.base import Cloud, Watcher
from agent.config import Config
from agent.confirmation import Confirmation, Verdict
from agent.hooks import Hook
from agent.lifecycle import Lifecycle
from agent.loop import Daemon
from agent.notice import (
    REBALANCE_RECOMMENDATION,
    SCHEDULED_MAINTENANCE,
    SPOT_INTERRUPTION,
    TERMINAL_KINDS,
    Notice,
)
from agent.presence import GONE_POLLS
from agent.state import StateFile
from agent.systemd import Notifier
from tests import waiting

INTERVAL = 0.05
TIMEOUT = 15.0

ConfirmFn = Callable[..., Optional[Confirmation]]


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """The shared bounded wait, with what is awaited named first as these tests read best."""
    return waiting.wait_until(predicate, timeout, what)


class ListWatcher(Watcher):
    """Returns the notices the test put in ``present``; raises while ``failing``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.interval = INTERVAL
        self.max_backoff = INTERVAL
        self.present: list[Notice] = []
        self.failing = False
        self.polls = 0

    def poll(self) -> list[Notice]:
        self.polls += 1
        if self.failing:
            raise ValueError("metadata unreadable")
        return list(self.present)


class ScriptedCloud(Cloud):
    name = "scripted"
    section = dict

    def __init__(self, confirm_fn: ConfirmFn, watchers: list[ListWatcher]) -> None:
        self.confirm_fn = confirm_fn
        self.watchers_ = watchers
        self.calls: list[dict[str, Any]] = []

    def watchers(self, section: Any, clock: Clock) -> list[Watcher]:
        return list(self.watchers_)

    at_stop: Optional[Notice] = None
    """What the cloud answers when a stop asks whether this is an interruption."""

    def interrupted_now(self, section: Any, clock: Clock, timeout: float) -> Optional[Notice]:
        return self.at_stop

    def confirm(
        self,
        notice: Notice,
        budget_end: float,
        gone: Callable[[], bool],
        cancel: threading.Event,
    ) -> Optional[Confirmation]:
        self.calls.append({"notice": notice, "budget_left": budget_end - time.monotonic()})
        return self.confirm_fn(notice=notice, gone=gone, cancel=cancel)


class Recorder:
    """Hook scripts that append ``name phase`` to one log file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "calls.log"
        self.hooks: list[Hook] = []

    def add(self, name: str, kinds: frozenset[str] = TERMINAL_KINDS, resume: bool = False) -> None:
        script = self.folder / name
        script.write_text(f'#!/bin/sh\necho "{name} $1" >> "{self.log}"\n')
        script.chmod(0o755)
        self.hooks.append(Hook(name, (str(script),), str(script), kinds, resume))

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def make_notice(kind: str = SPOT_INTERRUPTION, event: str = "", seconds: float = 60) -> Notice:
    now = datetime.now(timezone.utc)
    return Notice(
        provider="scripted",
        kind=kind,
        action="terminate" if kind in TERMINAL_KINDS else "rebalance",
        instance_id="i-1",
        event_id=event or f"scripted:i-1:{kind}",
        deadline=now + timedelta(seconds=seconds) if kind in TERMINAL_KINDS else None,
        raw="{}",
        detected_at=now,
    )


class Harness:
    def __init__(self, tmp: Path, confirm_fn: ConfirmFn, **config: Any) -> None:
        self.watcher = ListWatcher("scripted-spot")
        self.provider = ScriptedCloud(confirm_fn, [self.watcher])
        self.hooks = Recorder(tmp)
        self.sent: list[str] = []
        settings = {
            "state_dir": tmp / "state",
            "hooks_dir": tmp,
            "plugins": False,
            "safety_margin": 0.0,
            "kill_grace": 1.0,
            **config,
        }
        self.store = Lifecycle(StateFile(tmp / "state", "boot-1"), strict=True)
        self.daemon = Daemon(
            Config(**settings),
            self.provider,
            Clock(),
            Notifier(self.sent.append, watchdog_interval=0.2),
            self.store,
            hooks=lambda: (list(self.hooks.hooks), []),
            confirmer=self.provider.confirm,
        )
        self.code: Optional[int] = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.daemon.run()

    def start(self) -> Harness:
        self.thread.start()
        wait_until(lambda: self.watcher.polls > 0, what="a first poll")
        return self

    def stop(self) -> None:
        self.daemon.request_stop()

    def exit_code(self) -> int:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "the daemon did not exit"
        assert self.code is not None
        return self.code

    def status(self) -> Optional[str]:
        record = self.store.get(f"scripted:i-1:{SPOT_INTERRUPTION}")
        return record["status"] if record else None


def answer(verdict: Verdict, detail: str = "as scripted") -> ConfirmFn:
    return lambda **kw: Confirmation(verdict, detail)


# -- outcomes of a termination drain -----------------------------------------------------------


def test_confirmed_exits_finished_with_state_and_status(harness: Callable[..., Harness]) -> None:
    h = harness(answer(Verdict.CONFIRMED, "spot request marked-for-termination"))
    h.hooks.add("10-drain")
    h.start()
    h.watcher.present = [make_notice(seconds=60)]
    assert h.exit_code() == exitcodes.FINISHED
    assert h.hooks.calls() == ["10-drain drain"]
    assert h.status() == state.CONFIRMED
    record = h.store.get(f"scripted:i-1:{SPOT_INTERRUPTION}")
    assert record is not None and "marked-for-termination" in record["confirmation"]
    assert "STATUS=confirming terminate" in h.sent
    assert h.sent[-1] == "STOPPING=1\nSTATUS=confirmed terminate"
    (call,) = h.provider.calls
    assert 55 + 60 <= call["budget_left"] <= 60 + 60, "deadline plus confirm_grace"


def test_not_confirmed_within_the_budget_exits_4(harness: Callable[..., Harness]) -> None:
    h = harness(answer(Verdict.UNKNOWN, "no answer within 120 s"), confirm_grace=5.0)
    h.start()
    h.watcher.present = [make_notice(seconds=30)]
    assert h.exit_code() == exitcodes.NOT_CONFIRMED
    assert h.status() == state.NOT_CONFIRMED
    assert h.sent[-1].endswith("STATUS=not confirmed terminate")
    assert 25 + 5 <= h.provider.calls[0]["budget_left"] <= 30 + 5


def test_a_provider_that_cannot_confirm_lets_the_notice_end_the_run(
    harness: Callable[..., Harness],
) -> None:
    h = harness(lambda **kw: None)
    h.start()
    h.watcher.present = [make_notice()]
    assert h.exit_code() == exitcodes.FINISHED
    assert h.status() == state.DRAINED


def test_confirm_off_never_asks_the_provider(harness: Callable[..., Harness]) -> None:
    h = harness(answer(Verdict.UNKNOWN), confirm=False)
    h.start()
    h.watcher.present = [make_notice()]
    assert h.exit_code() == exitcodes.FINISHED
    assert h.provider.calls == []
    assert h.status() == state.DRAINED


def test_a_provider_that_raises_is_not_confirmed(harness: Callable[..., Harness]) -> None:
    def broken(**kw: Any) -> Optional[Confirmation]:
        raise RuntimeError("bug")

    h = harness(broken)
    h.start()
    h.watcher.present = [make_notice()]
    assert h.exit_code() == exitcodes.NOT_CONFIRMED


def test_the_loop_polls_and_pings_while_confirming_and_a_stop_ends_it(
    harness: Callable[..., Harness],
) -> None:
    started = threading.Event()

    def slow(cancel: threading.Event, **kw: Any) -> Confirmation:
        started.set()
        cancel.wait(TIMEOUT)  # a long confirmation: only the cancel ends it
        return Confirmation(Verdict.UNKNOWN, "cancelled")

    h = harness(slow)
    h.start()
    h.watcher.present = [make_notice()]
    assert started.wait(TIMEOUT)
    polls, pings = h.watcher.polls, h.sent.count("WATCHDOG=1")
    wait_until(lambda: h.watcher.polls > polls + 5, what="polls while confirming")
    wait_until(lambda: h.sent.count("WATCHDOG=1") > pings, what="watchdog pings while confirming")
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED
    assert h.status() == state.DRAINED


# -- withdrawn ---------------------------------------------------------------------------------


def until_gone(**kw: Any) -> Confirmation:
    """Like the clouds' APIs when an interruption is called off: fine, and the notice goes."""
    gone, cancel = kw["gone"], kw["cancel"]
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end and not cancel.is_set():
        if gone():
            return Confirmation(Verdict.WITHDRAWN, "spot request fulfilled, instance running")
        time.sleep(0.01)
    return Confirmation(Verdict.UNKNOWN, "never gone")


def test_withdrawn_termination_runs_resume_hooks_in_reverse_and_drains_again_later(
    harness: Callable[..., Harness],
) -> None:
    answers = [until_gone, answer(Verdict.CONFIRMED)]

    def scripted(**kw: Any) -> Optional[Confirmation]:
        return answers.pop(0)(**kw)

    h = harness(scripted)
    h.hooks.add("10-first", resume=True)
    h.hooks.add("20-plain")
    h.hooks.add("30-last", resume=True)
    h.start()
    notice = make_notice()
    h.watcher.present = [notice]
    wait_until(
        lambda: len(h.hooks.calls()) == 3 and h.provider.calls, what="the drain and confirming"
    )
    assert "STATUS=confirming terminate" in h.sent
    h.watcher.present = []
    wait_until(lambda: len(h.hooks.calls()) == 5, what="the resume hooks")
    wait_until(lambda: h.status() is None, what="the record to be forgotten")
    assert h.hooks.calls() == [
        "10-first drain",
        "20-plain drain",
        "30-last drain",
        "30-last resume",
        "10-first resume",
    ]
    assert h.thread.is_alive(), "it keeps watching"
    wait_until(lambda: f"STATUS=watching {h.provider.name}" in h.sent[-3:], what="watching again")

    h.watcher.present = [make_notice()]  # a later notice: drained from scratch
    assert h.exit_code() == exitcodes.FINISHED
    assert h.hooks.calls()[5:] == ["10-first drain", "20-plain drain", "30-last drain"]
    assert h.status() == state.CONFIRMED


def test_a_notice_missing_from_one_poll_is_not_yet_gone(harness: Callable[..., Harness]) -> None:
    seen_gone: list[bool] = []

    def watch(**kw: Any) -> Confirmation:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            seen_gone.append(kw["gone"]())
            time.sleep(0.005)
        return Confirmation(Verdict.CONFIRMED, "done")

    h = harness(watch)
    h.start()
    notice = make_notice()
    h.watcher.present = [notice]
    wait_until(lambda: seen_gone, what="confirming")
    polls = h.watcher.polls
    h.watcher.present = []
    wait_until(lambda: h.watcher.polls >= polls + GONE_POLLS - 1, what="one poll without it")
    h.watcher.present = [notice]
    assert h.exit_code() == exitcodes.FINISHED
    assert GONE_POLLS >= 2 and not any(seen_gone)


def test_failed_polls_never_count_as_gone(harness: Callable[..., Harness]) -> None:
    seen: list[bool] = []

    def watch(**kw: Any) -> Confirmation:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            seen.append(kw["gone"]())
            time.sleep(0.005)
        return Confirmation(Verdict.CONFIRMED, "done")

    h = harness(watch)
    h.start()
    h.watcher.present = [make_notice()]
    wait_until(lambda: seen, what="confirming")
    h.watcher.failing = True
    assert h.exit_code() == exitcodes.FINISHED
    assert not any(seen)


def test_maintenance_event_that_disappears_runs_its_resume_hooks(
    harness: Callable[..., Harness],
) -> None:
    h = harness(answer(Verdict.CONFIRMED))
    kinds = frozenset({SCHEDULED_MAINTENANCE})
    h.hooks.add("10-maint", kinds=kinds, resume=True)
    h.hooks.add("20-maint-no-resume", kinds=kinds)
    h.start()
    event = make_notice(SCHEDULED_MAINTENANCE, "scripted:i-1:maintenance:ev-1")
    h.watcher.present = [event]
    wait_until(lambda: len(h.hooks.calls()) == 2, what="the maintenance drain")
    wait_until(
        lambda: (h.store.get(event.event_id) or {}).get("status") == state.DRAINED, "drained"
    )
    h.watcher.present = []  # cancelled or completed: it leaves the metadata
    wait_until(lambda: h.hooks.calls()[2:] == ["10-maint resume"], what="its resume hook")
    wait_until(lambda: h.store.get(event.event_id) is None, what="the record to be forgotten")
    h.watcher.present = [event]  # scheduled again: drained again
    wait_until(lambda: len(h.hooks.calls()) == 5, what="a second drain")
    assert h.provider.calls == [], "advisory notices are not confirmed"
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED


def test_rebalance_that_never_becomes_a_termination_is_withdrawn_once(
    harness: Callable[..., Harness],
) -> None:
    h = harness(answer(Verdict.CONFIRMED), rebalance_resume_after=0.5)
    h.hooks.add("10-cordon", kinds=frozenset({REBALANCE_RECOMMENDATION}), resume=True)
    h.start()
    rebalance = make_notice(REBALANCE_RECOMMENDATION)
    h.watcher.present = [rebalance]
    wait_until(lambda: h.hooks.calls() == ["10-cordon drain", "10-cordon resume"], what="resume")
    wait_until(
        lambda: (h.store.get(rebalance.event_id) or {}).get("status") == state.WITHDRAWN,
        "withdrawn while still present",
    )
    polls = h.watcher.polls
    wait_until(lambda: h.watcher.polls > polls + 10, what="more polls")
    assert len(h.hooks.calls()) == 2, "still present: not drained again"
    h.watcher.present = []
    wait_until(lambda: h.store.get(rebalance.event_id) is None, what="forgotten once it goes")
    h.watcher.present = [rebalance]
    wait_until(lambda: len(h.hooks.calls()) == 3, what="a new recommendation drains again")
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED


def test_restart_after_the_drain_confirms_without_rerunning_hooks(
    harness: Callable[..., Harness],
) -> None:
    first = harness(lambda **kw: kw["cancel"].wait(TIMEOUT) and None)
    first.hooks.add("10-drain")
    first.start()
    notice = make_notice()
    first.watcher.present = [notice]
    wait_until(lambda: first.provider.calls, what="confirming")
    first.stop()  # the process goes away mid-confirmation
    assert first.exit_code() == exitcodes.FINISHED
    assert first.status() == state.DRAINED

    second = harness(answer(Verdict.CONFIRMED))
    second.hooks.hooks = list(first.hooks.hooks)
    second.start()
    second.watcher.present = [notice]
    assert second.exit_code() == exitcodes.FINISHED
    assert second.hooks.calls() == ["10-drain drain"], "hooks are not run twice"
    assert second.status() == state.CONFIRMED
