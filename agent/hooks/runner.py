"""Runs hooks one after another, each in its own process group, all under one deadline.

A hook that fails or hangs never stops the next: on its timeout its whole process group
gets SIGTERM, then SIGKILL after a grace period, and whatever a hook leaves running in its
group when it exits is ended the same way before the next starts. Output is logged line by
line with the hook's name in front, up to a limit per hook. The runner knows nothing about
clouds: it gets a notice, a phase and the monotonic time by which everything must be over.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import IO, Callable, Optional, Union

from agent.clock import Clock, utc_rfc3339
from agent.hooks import Hook
from agent.hooks.processes import NoticeInput, end_group, kill_leftover
from agent.interpreter import python_env
from agent.logs import fields
from agent.notice import Notice
from agent.systemd import hook_environment

LOG = logging.getLogger(__name__)

__all__ = ["ERROR", "FAILED", "OK", "SKIPPED", "TIMEOUT", "HookResult", "HookRunner"]
__all__ += ["hook_deadline", "hook_variables", "kill_leftover"]

OK, FAILED, TIMEOUT, SKIPPED, ERROR = "ok", "failed", "timeout", "skipped", "error"
MAX_LINE = 8192
"""A longer line is logged in pieces of this many bytes."""
MAX_LOGGED_LINES = 1000
MAX_LOGGED_BYTES = 128 * 1024
"""Per hook: output beyond either limit is read and counted, not logged."""
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
        on_start: Callable[[Hook, int], None] = lambda hook, pgid: None,
        on_result: Callable[[Hook, HookResult], None] = lambda hook, result: None,
    ) -> list[HookResult]:
        """Run ``hooks`` in order so that all are over by the monotonic time ``end``.

        ``end`` may be a callable, read again while hooks run, so a caller can bring it
        forward (a termination with an earlier deadline). A hook gets SIGTERM ``kill_grace``
        before ``end`` (or at its own timeout), so even a hook that ignores SIGTERM is gone
        by ``end``; with little time left the grace shrinks to half of it, so a hook is
        skipped only when ``end`` has passed. ``deadline`` is the wall-clock instant hooks
        are told about; ``cancel`` stops the run early.

        ``on_start(hook, pgid)`` is called once the hook's process exists (its process
        group id, to end a copy left running should the agent die). A hook that could not
        be started, for whatever reason, is an ``error`` result, never preceded by
        ``on_start``, and the next one runs.
        """
        cancel = cancel or threading.Event()
        end_at = end if callable(end) else (lambda: end)
        results = []
        for hook in hooks:
            if cancel.is_set() or end_at() <= self._clock.monotonic():
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
                try:
                    result = self._run_one(
                        hook, notice, phase, end_at, deadline, dry_run, cancel, on_start
                    )
                except Exception as exc:  # whatever it was, this hook only
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
        end_at: Callable[[], float],
        deadline: datetime,
        dry_run: bool,
        cancel: threading.Event,
        on_start: Callable[[Hook, int], None],
    ) -> HookResult:
        now = self._clock.now()
        started = self._clock.monotonic()
        own = min([t for t in (hook.timeout, self._hook_timeout) if t], default=None)
        # The grace comes out of the window, but never more than half of what is left.
        grace = min(self._grace, max(0.0, end_at() - started) / 2)

        def stop_at() -> float:
            """When SIGTERM goes out: the hook's own limit, or the grace before the end."""
            by_end = end_at() - grace
            return min(by_end, started + own) if own else by_end

        timeout = stop_at() - started
        log_fields = fields(
            HOOK=hook.name, NOTICE_ID=notice.event_id, KIND=notice.kind, PHASE=phase
        )
        env = python_env(self._env) if hook.imports_agent else dict(self._env)
        env.update(hook_variables(notice, phase, deadline, now, timeout, dry_run))

        def finish(outcome: str, code: Optional[int], detail: str = "") -> HookResult:
            duration = round(self._clock.monotonic() - started, 3)
            LOG.log(
                logging.INFO if outcome == OK else logging.WARNING,
                "hook %s: %s after %.1f s%s",
                hook.name,
                outcome,
                duration,
                f" ({detail})" if detail else "",
                extra={**log_fields, "OUTCOME": outcome},
            )
            return HookResult(hook.name, outcome, code, utc_rfc3339(now), duration, detail)

        stdin = NoticeInput(notice.to_json().encode() + b"\n")
        try:
            proc = subprocess.Popen(
                [*hook.argv, phase],
                stdin=stdin.fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            stdin.close()
            return finish(ERROR, None, _cannot_execute(exc))
        except BaseException:
            stdin.close()
            raise
        stdin.started()
        LOG.info(
            "hook %s: started (%s, %.0f s allowed)", hook.name, phase, timeout, extra=log_fields
        )
        try:
            on_start(hook, proc.pid)
        except Exception:  # the hook runs regardless: recording it is not worth a drain
            LOG.exception("hook %s: recording its start failed", hook.name)
        reader = threading.Thread(
            target=_stream, args=(hook.name, proc.stdout, log_fields), daemon=True
        )
        reader.start()
        why = ""
        while why == "":
            try:
                proc.wait(timeout=max(0.0, min(WAIT_STEP, stop_at() - self._clock.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if cancel.is_set():
                    why = "run cancelled"
                elif self._clock.monotonic() >= stop_at():
                    out_of_time = own and started + own < end_at() - grace
                    why = "its timeout" if out_of_time else "the run's end"
        now_m = self._clock.monotonic()
        # SIGTERM to the group (the hook, or what it left), SIGKILL after the grace: never
        # past the end, and gone before the next hook starts.
        ended = end_group(
            proc.pid,
            max(0.0, min(self._grace, end_at() - now_m)),
            lambda: proc.poll() is not None,
            self._clock.monotonic,
        )
        stdin.close()
        reader.join(timeout=1.0)
        if why:
            return finish(TIMEOUT, proc.returncode, why)
        return finish(*_exited(proc.returncode, ended))


def _cannot_execute(exc: OSError) -> str:
    hint = ""
    if exc.errno == errno.ENOEXEC:
        hint = "; is the #! line missing?"
    elif exc.errno == errno.EACCES:
        hint = "; is the folder on a noexec mount?"
    return f"cannot execute: {exc.strerror}{hint}"


def _exited(code: int, ended: int) -> tuple[str, int, str]:
    """Outcome, exit code and detail of a hook that exited on its own."""
    left = f"ended what it left running (signal {ended})" if ended else ""
    if code == 0:
        return OK, 0, left
    if code == 126:
        detail = "exit 126: could not execute something (noexec mount?)"
    elif code < 0:
        detail = f"killed by signal {-code}"
    else:
        detail = f"exit code {code}"
    return FAILED, code, f"{detail}; {left}" if left else detail


def _stream(name: str, pipe: Optional[IO[bytes]], log_fields: dict[str, object]) -> None:
    """Log a hook's output line by line, up to MAX_LOGGED_LINES / MAX_LOGGED_BYTES; the rest
    is read (so the hook never blocks on a full pipe) and counted in one line at the end."""
    if pipe is None:  # pragma: no cover - stdout=PIPE always gives one
        return
    logged = size = dropped = dropped_bytes = 0
    with pipe:
        # Bounded reads: a hook printing without newlines cannot grow the agent's memory.
        for raw in iter(lambda: pipe.readline(MAX_LINE), b""):
            if logged < MAX_LOGGED_LINES and size + len(raw) <= MAX_LOGGED_BYTES:
                logged += 1
                size += len(raw)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                LOG.info("[%s] %s", name, line, extra=log_fields)
            else:
                dropped += 1
                dropped_bytes += len(raw)
    if dropped:
        LOG.warning(
            "[%s] %d more lines (%d bytes) of output not logged: the limit is %d lines or "
            "%d bytes per hook",
            name,
            dropped,
            dropped_bytes,
            MAX_LOGGED_LINES,
            MAX_LOGGED_BYTES,
            extra=log_fields,
        )


def hook_deadline(notice: Notice, now: datetime, max_run_time: float) -> datetime:
    """What hooks are told as PREEMPT_DEADLINE: the notice's own, or now + max_run_time."""
    return notice.deadline or now + timedelta(seconds=max_run_time)
