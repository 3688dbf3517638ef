"""The loop's runs beyond the happy path, with a scripted provider and real hook processes.

A worker that fails, a hibernation the instance comes back from, runs cut short by a
cancel, a stop during a resume, and the signal handler. Every wait is a bounded wait on a
condition; the harness is the one of test_daemon_confirm.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from agent import exitcodes
from agent import lifecycle as state
from agent.confirmation import Verdict
from agent.hooks import Hook
from agent.notice import REBALANCE_RECOMMENDATION, SCHEDULED_MAINTENANCE, SHUTDOWN, Notice
from tests.test_loop_confirm import (
    Harness,
    answer,
    make_notice,
    until_gone,
    wait_until,
)

REBALANCE = frozenset({REBALANCE_RECOMMENDATION})
MAINTENANCE = frozenset({SCHEDULED_MAINTENANCE})


def gated(h: Harness, name: str, kinds: frozenset[str], phase: str, resume: bool = False) -> Path:
    """A hook that logs ``name phase`` and, in ``phase``, waits until the returned gate file
    exists (a killed wait ends the hook)."""
    gate = h.hooks.folder / f"{name}.gate"
    script = h.hooks.folder / name
    script.write_text(
        "#!/bin/sh\n"
        f'echo "{name} $1" >> "{h.hooks.log}"\n'
        f'if [ "$1" = "{phase}" ]; then\n'
        f'  while [ ! -e "{gate}" ]; do sleep 0.05; done\n'
        "fi\n"
    )
    script.chmod(0o755)
    h.hooks.hooks.append(Hook(name, (str(script),), str(script), kinds, resume))
    return gate


def status_of(h: Harness, notice: Notice) -> Optional[str]:
    record = h.store.get(notice.event_id)
    return record["status"] if record else None


# -- a worker that fails -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [RuntimeError("bug in listing"), SystemExit(3)],
    ids=["exception", "system-exit"],
)
def test_a_failing_hook_listing_exits_1_and_the_restart_drains(
    harness: Callable[..., Harness], error: BaseException
) -> None:
    first = harness(answer(Verdict.CONFIRMED))
    first.hooks.add("10-drain")

    def broken() -> tuple[list[Hook], list[Any]]:
        raise error

    first.daemon.runs.worker.hooks = broken
    first.start()
    notice = make_notice()
    first.watcher.present = [notice]
    assert first.exit_code() == exitcodes.FAILURE, "systemd restarts the agent"
    assert first.status() == state.DRAINING
    assert first.hooks.calls() == []
    assert first.provider.calls == [], "nothing drained, nothing confirmed"

    second = harness(answer(Verdict.CONFIRMED))
    second.hooks.hooks = list(first.hooks.hooks)
    second.start()
    second.watcher.present = [notice]
    assert second.exit_code() == exitcodes.FINISHED
    assert second.hooks.calls() == ["10-drain drain"]
    assert second.status() == state.CONFIRMED


def test_a_failure_mid_drain_exits_1_and_the_restart_runs_only_what_is_left(
    harness: Callable[..., Harness],
) -> None:
    first = harness(answer(Verdict.CONFIRMED))
    first.hooks.add("10-first")
    first.hooks.add("20-second")
    real = first.store.hook_result
    writes: list[str] = []

    def breaks_on_the_second(
        event_id: str, phase: str, hook: str, result: Any, finished: bool
    ) -> None:
        writes.append(hook)
        if len(writes) > 1:
            raise TypeError("a bug in the state layer")
        real(event_id, phase, hook, result, finished)

    first.store.hook_result = breaks_on_the_second  # type: ignore[method-assign]
    first.start()
    notice = make_notice()
    first.watcher.present = [notice]
    assert first.exit_code() == exitcodes.FAILURE
    assert first.hooks.calls() == ["10-first drain", "20-second drain"]
    assert first.status() == state.DRAINING

    second = harness(answer(Verdict.CONFIRMED))
    second.hooks.hooks = list(first.hooks.hooks)
    second.start()
    second.watcher.present = [notice]
    assert second.exit_code() == exitcodes.FINISHED
    assert second.hooks.calls()[2:] == ["20-second drain"], "only what was not recorded"


# -- hibernation -------------------------------------------------------------------------------


def test_hibernate_keeps_watching_and_resumes_when_the_notice_goes(
    harness: Callable[..., Harness],
) -> None:
    h = harness(answer(Verdict.CONFIRMED, "spot request marked-for-hibernation"))
    h.hooks.add("10-first", resume=True)
    h.hooks.add("20-plain")
    h.hooks.add("30-last", resume=True)
    h.start()
    hibernate = dataclasses.replace(make_notice(), action="hibernate")
    h.watcher.present = [hibernate]
    wait_until(lambda: h.status() == state.CONFIRMED, "the hibernation to be confirmed")
    polls = h.watcher.polls
    wait_until(lambda: h.watcher.polls > polls + 5, "more polls")
    assert h.thread.is_alive(), "the instance comes back in this boot: no exit"
    assert h.hooks.calls() == ["10-first drain", "20-plain drain", "30-last drain"]
    assert not any(m.startswith("STOPPING=1") for m in h.sent)

    h.watcher.present = []  # back from hibernation: the notice has gone
    wait_until(lambda: len(h.hooks.calls()) == 5, "the resume hooks")
    assert h.hooks.calls()[3:] == ["30-last resume", "10-first resume"]
    wait_until(lambda: h.status() is None, "the record to be forgotten")

    h.watcher.present = [make_notice()]  # interrupted again in the same boot: drained again
    assert h.exit_code() == exitcodes.FINISHED
    assert h.hooks.calls()[5:] == ["10-first drain", "20-plain drain", "30-last drain"]
    assert h.status() == state.CONFIRMED


# -- runs cut short by a cancel ----------------------------------------------------------------


def test_a_hook_killed_by_a_cancel_is_not_recorded_as_finished(
    harness: Callable[..., Harness],
) -> None:
    h = harness(answer(Verdict.CONFIRMED))
    gated(h, "10-cordon", REBALANCE, "drain")
    h.hooks.add("20-terminate")
    h.start()
    rebalance = make_notice(REBALANCE_RECOMMENDATION)
    h.watcher.present = [rebalance]
    wait_until(lambda: h.hooks.calls() == ["10-cordon drain"], "the rebalance hook")
    h.watcher.present = [rebalance, make_notice()]
    assert h.exit_code() == exitcodes.FINISHED
    assert h.hooks.calls() == ["10-cordon drain", "20-terminate drain"]
    assert status_of(h, rebalance) == state.DRAINING
    assert h.store.finished_hooks(rebalance.event_id, "drain") == set(), "killed: runs again"


def test_a_cancelled_resume_keeps_its_record_and_runs_again_first(
    harness: Callable[..., Harness],
) -> None:
    h = harness(until_gone)
    gate = gated(h, "10-cordon", REBALANCE, "resume", resume=True)
    h.hooks.add("20-terminate")
    h.start()
    rebalance = make_notice(REBALANCE_RECOMMENDATION)
    h.watcher.present = [rebalance]
    wait_until(lambda: status_of(h, rebalance) == state.DRAINED, "the rebalance drain")
    h.watcher.present = []
    wait_until(lambda: h.hooks.calls()[-1:] == ["10-cordon resume"], "its resume")

    termination = make_notice()
    h.watcher.present = [termination]  # cancels the resume
    wait_until(lambda: h.provider.calls, "the termination drained and confirming")
    assert h.hooks.calls() == ["10-cordon drain", "10-cordon resume", "20-terminate drain"]
    assert status_of(h, rebalance) is not None, "the cancelled resume is still owed"
    assert h.store.finished_hooks(rebalance.event_id, "resume") == set()

    gate.touch()
    h.watcher.present = []  # the termination is withdrawn too
    wait_until(lambda: status_of(h, termination) is None, "the termination forgotten")
    wait_until(lambda: status_of(h, rebalance) is None, "the rebalance forgotten")
    assert h.hooks.calls()[3:] == ["10-cordon resume"], "the cancelled resume ran again"
    assert h.thread.is_alive()


# -- a stop during a resume --------------------------------------------------------------------


def test_a_stop_during_a_resume_extends_the_timeout_and_a_restart_runs_queued_resumes(
    harness: Callable[..., Harness],
) -> None:
    first = harness(answer(Verdict.CONFIRMED))
    gates = [
        gated(first, "10-rebalance", REBALANCE, "resume", resume=True),
        gated(first, "20-maintenance", MAINTENANCE, "resume", resume=True),
    ]
    first.start()
    notices = [
        make_notice(REBALANCE_RECOMMENDATION),
        make_notice(SCHEDULED_MAINTENANCE, "scripted:i-1:maintenance:ev-1"),
    ]
    first.watcher.present = list(notices)
    wait_until(lambda: all(status_of(first, n) == state.DRAINED for n in notices), "both drained")
    first.watcher.present = []  # both go at once: one resume runs, the other waits
    wait_until(lambda: any("resume" in c for c in first.hooks.calls()), "a resume to start")
    assert all(status_of(first, n) == state.RESUMING for n in notices)
    first.stop()
    wait_until(lambda: any("EXTEND_TIMEOUT_USEC=" in m for m in first.sent), "the extension")
    for gate in gates:
        gate.touch()
    assert first.exit_code() == exitcodes.FINISHED
    resumed = [c for c in first.hooks.calls() if c.endswith(" resume")]
    assert len(resumed) == 1, "the queued resume does not start during a stop"
    waiting = [n for n in notices if status_of(first, n) is not None]
    assert [status_of(first, n) for n in waiting] == [state.RESUMING]

    second = harness(answer(Verdict.CONFIRMED))
    second.hooks.hooks = list(first.hooks.hooks)
    second.start()
    wait_until(lambda: status_of(second, waiting[0]) is None, "the queued resume after a restart")
    assert sorted(c for c in second.hooks.calls() if c.endswith(" resume")) == [
        "10-rebalance resume",
        "20-maintenance resume",
    ]
    second.stop()
    assert second.exit_code() == exitcodes.FINISHED


# -- signals -----------------------------------------------------------------------------------


def test_the_signal_handler_only_takes_note(harness: Callable[..., Harness]) -> None:
    """No lock, no I/O in the handler: the interrupted thread may hold any lock."""
    h = harness(answer(Verdict.CONFIRMED))
    h.start()
    h.daemon._on_signal(signal.SIGHUP, None)
    h.daemon._on_signal(signal.SIGUSR1, None)
    h.daemon.inbox.wake()
    wait_until(lambda: not h.daemon._signals, "the loop to take the signals")
    assert h.thread.is_alive(), "SIGHUP and SIGUSR1 do not end the agent"
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED


def test_a_stop_ends_an_idle_loop_within_about_a_second(harness: Callable[..., Harness]) -> None:
    h = harness(answer(Verdict.CONFIRMED))
    h.watcher.interval = 60.0
    h.start()
    h.stop()  # the stop wakes the loop at once
    h.thread.join(1.0)
    assert not h.thread.is_alive()
    assert h.exit_code() == exitcodes.FINISHED


# -- the shutdown path -------------------------------------------------------------------------


def test_a_stop_during_an_interruption_drains_before_exiting(
    harness: Callable[..., Harness],
) -> None:
    h = harness(answer(Verdict.CONFIRMED), shutdown_timeout=20.0)
    h.hooks.add("10-drain")
    h.start()
    h.provider.at_stop = make_notice(seconds=30)  # the soft-off came with the notice
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED
    assert h.hooks.calls() == ["10-drain drain"]
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in h.sent)
    record = h.store.get(make_notice().event_id)
    assert record is not None
    assert record["hooks"]["drain"]["10-drain"]["outcome"] == "ok"


def test_a_plain_stop_runs_no_hook(harness: Callable[..., Harness]) -> None:
    h = harness(answer(Verdict.CONFIRMED))
    h.hooks.add("10-drain")
    h.hooks.add("20-shutdown", frozenset({SHUTDOWN}))
    h.start()
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED
    assert h.hooks.calls() == []


def test_drain_on_shutdown_runs_the_shutdown_hooks_on_every_stop(
    harness: Callable[..., Harness],
) -> None:
    h = harness(answer(Verdict.CONFIRMED), drain_on_shutdown=True, shutdown_timeout=20.0)
    h.hooks.add("10-drain")
    h.hooks.add("20-shutdown", frozenset({SHUTDOWN}))
    h.start()
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED
    assert h.hooks.calls() == ["20-shutdown drain"]


# -- records nobody would come back to -------------------------------------------------------


def test_a_cancelled_advisory_drain_that_leaves_metadata_is_resumed(
    harness: Callable[..., Harness],
) -> None:
    """A rebalance cut short for a termination, gone by the time the termination is
    withdrawn: what it drained is resumed, and its record does not stay ``draining``."""
    h = harness(until_gone)
    h.hooks.add("10-cordon", kinds=REBALANCE, resume=True)
    gate = gated(h, "20-slow", REBALANCE, "drain")
    h.hooks.add("30-terminate")
    h.start()
    rebalance = make_notice(REBALANCE_RECOMMENDATION)
    h.watcher.present = [rebalance]
    wait_until(lambda: h.hooks.calls()[-1:] == ["20-slow drain"], "the rebalance drain")
    termination = make_notice()
    h.watcher.present = [rebalance, termination]  # cancels the rebalance drain
    wait_until(lambda: h.provider.calls, "the termination drained and confirming")
    gate.touch()
    h.watcher.present = []  # both leave: the termination is withdrawn
    wait_until(lambda: status_of(h, termination) is None, "the termination forgotten")
    wait_until(lambda: status_of(h, rebalance) is None, "the rebalance resumed and forgotten")
    assert "10-cordon resume" in h.hooks.calls()
    assert h.hooks.calls().count("10-cordon drain") == 1, "finished hooks do not run twice"
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED


def test_a_restart_takes_up_every_unfinished_record_even_unreported(
    harness: Callable[..., Harness],
) -> None:
    """Two advisory drains and an expired rebalance's resume left by a killed process, none
    of them reported any more: each runs, and each record ends."""
    h = harness(answer(Verdict.CONFIRMED))
    h.hooks.add("10-rebalance", kinds=REBALANCE, resume=True)
    h.hooks.add("20-maintenance", kinds=MAINTENANCE, resume=True)
    rebalance = make_notice(REBALANCE_RECOMMENDATION)
    maintenance = make_notice(SCHEDULED_MAINTENANCE, "scripted:i-1:maintenance:ev-1")
    old = make_notice(REBALANCE_RECOMMENDATION, "scripted:i-1:rebalance:old")
    for notice in (rebalance, maintenance, old):
        h.store.apply(notice.event_id, state.START, notice)
    h.store.apply(old.event_id, state.DRAIN_DONE)
    h.store.apply(old.event_id, state.WITHDRAW, withdrawn="expired", forget=False)
    h.start()
    for notice in (rebalance, maintenance, old):
        wait_until(lambda n=notice: status_of(h, n) is None, f"{notice.event_id} to end")
    calls = h.hooks.calls()
    assert sorted(calls) == [
        "10-rebalance drain",
        "10-rebalance resume",
        "10-rebalance resume",
        "20-maintenance drain",
        "20-maintenance resume",
    ]
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED


def test_a_restart_confirms_a_drained_termination_whose_notice_has_gone(
    harness: Callable[..., Harness],
) -> None:
    """Killed between drained and confirmed; the interruption was called off meanwhile:
    the restart asks again, and the resume hooks run instead of the node staying drained."""
    h = harness(until_gone)
    h.hooks.add("10-drain", resume=True)
    termination = make_notice()
    h.store.apply(termination.event_id, state.START, termination)
    h.store.hook_result(termination.event_id, "drain", "10-drain", {"outcome": "ok"}, True)
    h.store.apply(termination.event_id, state.DRAIN_DONE)
    h.start()
    wait_until(lambda: status_of(h, termination) is None, "the withdrawn termination forgotten")
    assert h.hooks.calls() == ["10-drain resume"]
    assert h.thread.is_alive()
    h.stop()
    assert h.exit_code() == exitcodes.FINISHED


def test_a_restart_after_a_run_that_ended_unconfirmed_keeps_watching(
    harness: Callable[..., Harness],
) -> None:
    first = harness(lambda **kw: None)  # this cloud cannot confirm: the notice ends the run
    first.hooks.add("10-drain")
    first.start()
    first.watcher.present = [make_notice()]
    assert first.exit_code() == exitcodes.FINISHED
    assert first.status() == state.DRAINED

    second = harness(lambda **kw: None)  # restarted in the same boot; the notice has gone
    second.hooks.hooks = list(first.hooks.hooks)
    second.start()
    polls = second.watcher.polls
    wait_until(lambda: second.watcher.polls >= polls + 5, "a few polls")
    assert second.thread.is_alive(), "nothing to take up: the run had ended"
    assert second.hooks.calls() == ["10-drain drain"]
    second.stop()
    assert second.exit_code() == exitcodes.FINISHED
