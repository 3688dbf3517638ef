"""Runs hooks one after another, each in its own process group, all under one deadline.

A hook that fails or hangs never stops the next: on its timeout its whole process group
gets SIGTERM, then SIGKILL after a grace period. Output is logged line by line with the
hook's name in front. The runner knows nothing about clouds: it gets a notice, a phase and
the monotonic time by which everything must be over.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import IO, Callable, Optional, Union

from agent.clock import Clock, utc_rfc3339
from agent.hooks import Hook
from agent.interpreter import python_env
from agent.logs import fields
from agent.notice import Notice
from agent.systemd import hook_environment

LOG = logging.getLogger(__name__)

OK, FAILED, TIMEOUT, SKIPPED, ERROR = "ok", "failed", "timeout", "skipped", "error"
MAX_LINE = 8192
WAIT_STEP = 0.25


@dataclass(frozen=True)
class HookResult:
    hook: str
    outcome: str
    exit_code: Optional[int]
    started: str
    duration: float
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def hook_variables(
    notice: Notice, phase: str, deadline: datetime, now: datetime, timeout: float, dry_run: bool
) -> dict[str, str]:
    """The PREEMPT_* variables a hook sees (documented in the README)."""
    return {
        "PREEMPT_PROVIDER": notice.provider,
        "PREEMPT_KIND": notice.kind,
        "PREEMPT_ACTION": notice.action,
        "PREEMPT_INSTANCE_ID": notice.instance_id,
        "PREEMPT_DEADLINE": utc_rfc3339(deadline),
        "PREEMPT_SECONDS_LEFT": str(max(0, math.floor((deadline - now).total_seconds()))),
        "PREEMPT_HOOK_TIMEOUT": str(max(0, math.floor(timeout))),
        "PREEMPT_EVENT_ID": notice.event_id,
        "PREEMPT_PHASE": phase,
        "PREEMPT_DRY_RUN": "1" if dry_run else "0",
    }


class HookRunner:
    def __init__(
        self,
        clock: Clock,
        kill_grace: float,
        hook_timeout: float = 0.0,
        base_env: Optional[Mapping[str, str]] = None,
    ) -> None:
        self._clock = clock
        self._grace = kill_grace
        self._hook_timeout = hook_timeout
        self._env = hook_environment(os.environ if base_env is None else base_env)

    def run(
        self,
        hooks: Iterable[Hook],
        notice: Notice,
        phase: str,
        end: Union[float, Callable[[], float]],
        deadline: datetime,
        *,
        dry_run: bool = False,
        cancel: Optional[threading.Event] = None,
        tick: Callable[[], None] = lambda: None,
        on_start: Callable[[Hook], None] = lambda hook: None,
        on_result: Callable[[Hook, HookResult], None] = lambda hook, result: None,
    ) -> list[HookResult]:
        """Run ``hooks`` in order so that all are over by the monotonic time ``end``.

        ``end`` may be a callable, read again while hooks run, so a caller can bring it
        forward (a termination with an earlier deadline). A hook gets SIGTERM ``kill_grace``
        before ``end`` (or at its own timeout), so even a hook that ignores SIGTERM is gone
        by ``end``. ``deadline`` is the wall-clock instant hooks are told about; ``tick`` is
        called while waiting (the daemon pings its watchdog there); ``cancel`` stops the
        run early. A hook that cannot be started, for whatever reason, is an ``error``
        result and the next one runs.
        """
        cancel = cancel or threading.Event()
        end_at = end if callable(end) else (lambda: end)
        results = []
        for hook in hooks:
            left = end_at() - self._grace - self._clock.monotonic()
            if cancel.is_set() or left <= 0:
                why = "run cancelled" if cancel.is_set() else "no time left before the deadline"
                result = HookResult(
                    hook.name, SKIPPED, None, utc_rfc3339(self._clock.now()), 0.0, why
                )
                LOG.warning(
                    "hook %s skipped: %s",
                    hook.name,
                    why,
                    extra=fields(HOOK=hook.name, OUTCOME=SKIPPED, NOTICE_ID=notice.event_id),
                )
            else:
                own = min([t for t in (hook.timeout, self._hook_timeout) if t], default=None)
                on_start(hook)
                try:
                    result = self._run_one(
                        hook, notice, phase, own, end_at, deadline, dry_run, cancel, tick
                    )
                except Exception as exc:  # a full /tmp, a pipe failure: this hook only
                    LOG.exception("hook %s: could not be run", hook.name)
                    result = HookResult(
                        hook.name, ERROR, None, utc_rfc3339(self._clock.now()), 0.0, repr(exc)
                    )
            results.append(result)
            on_result(hook, result)
        return results

    def _run_one(
        self,
        hook: Hook,
        notice: Notice,
        phase: str,
        own_timeout: Optional[float],
        end_at: Callable[[], float],
        deadline: datetime,
        dry_run: bool,
        cancel: threading.Event,
        tick: Callable[[], None],
    ) -> HookResult:
        now = self._clock.now()
        started = self._clock.monotonic()

        def stop_at() -> float:
            """When SIGTERM goes out: the hook's own limit, or kill_grace before the end."""
            by_end = end_at() - self._grace
            return min(by_end, started + own_timeout) if own_timeout else by_end

        timeout = stop_at() - started
        log_fields = fields(
            HOOK=hook.name, NOTICE_ID=notice.event_id, KIND=notice.kind, PHASE=phase
        )
        env = python_env(self._env) if hook.imports_agent else dict(self._env)
        env.update(hook_variables(notice, phase, deadline, now, timeout, dry_run))
        LOG.info(
            "hook %s: starting (%s, %.0f s allowed)", hook.name, phase, timeout, extra=log_fields
        )

        def finish(outcome: str, code: Optional[int], detail: str = "") -> HookResult:
            duration = round(self._clock.monotonic() - started, 3)
            level = logging.INFO if outcome == OK else logging.WARNING
            LOG.log(
                level,
                "hook %s: %s%s after %.1f s",
                hook.name,
                outcome,
                f" ({detail})" if detail else "",
                duration,
                extra={**log_fields, "OUTCOME": outcome},
            )
            return HookResult(hook.name, outcome, code, utc_rfc3339(now), duration, detail)

        with tempfile.TemporaryFile() as stdin:
            # A file, not a pipe: a hook that never reads stdin cannot block the agent.
            stdin.write(notice.to_json().encode() + b"\n")
            stdin.seek(0)
            try:
                proc = subprocess.Popen(
                    [*hook.argv, phase],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd="/",
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                hint = ""
                if exc.errno == errno.ENOEXEC:
                    hint = "; is the #! line missing?"
                elif exc.errno == errno.EACCES:
                    hint = "; is the folder on a noexec mount?"
                return finish(ERROR, None, f"cannot execute: {exc.strerror}{hint}")
        reader = threading.Thread(
            target=self._stream, args=(hook.name, proc.stdout, log_fields), daemon=True
        )
        reader.start()
        while True:
            try:
                code = proc.wait(
                    timeout=max(0.0, min(WAIT_STEP, stop_at() - self._clock.monotonic()))
                )
                break
            except subprocess.TimeoutExpired:
                tick()
                if cancel.is_set() or self._clock.monotonic() >= stop_at():
                    self._kill(proc, tick)
                    reader.join(timeout=1.0)
                    elapsed = self._clock.monotonic() - started
                    why = "run cancelled" if cancel.is_set() else f"timed out after {elapsed:.1f} s"
                    return finish(TIMEOUT, proc.returncode, why)
        reader.join(timeout=1.0)
        if code == 0:
            return finish(OK, 0)
        if code == 126:
            return finish(FAILED, code, "exit 126: could not execute something (noexec mount?)")
        if code < 0:
            return finish(FAILED, code, f"killed by signal {-code}")
        return finish(FAILED, code, f"exit code {code}")

    def _kill(self, proc: subprocess.Popen[bytes], tick: Callable[[], None]) -> None:
        """SIGTERM to the hook's whole process group, SIGKILL after the grace period."""
        for sig, wait in ((signal.SIGTERM, self._grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            until = self._clock.monotonic() + wait
            while self._clock.monotonic() < until:
                try:
                    proc.wait(timeout=min(WAIT_STEP, max(0.0, until - self._clock.monotonic())))
                    # The leader is gone; make sure nothing it started lingers in its group.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return
                except subprocess.TimeoutExpired:
                    tick()

    @staticmethod
    def _stream(name: str, pipe: Optional[IO[bytes]], log_fields: dict[str, object]) -> None:
        if pipe is None:  # pragma: no cover - stdout=PIPE always gives one
            return
        with pipe:
            # Bounded reads: a hook printing without newlines cannot grow the agent's memory.
            for raw in iter(lambda: pipe.readline(MAX_LINE), b""):
                line = raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r\n")
                LOG.info("[%s] %s", name, line, extra=log_fields)


def hook_deadline(notice: Notice, now: datetime, max_run_time: float) -> datetime:
    """What hooks are told as PREEMPT_DEADLINE: the notice's own, or now + max_run_time."""
    return notice.deadline or now + timedelta(seconds=max_run_time)
