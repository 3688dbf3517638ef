"""``preempt-agent status``: the runtime file (:mod:`agent.report.runtime`) and the state file.

The running agent says what it is doing in ``<state_dir>/runtime.json`` (pid, cloud,
watchers, its status text, the last notice's outcome), rewritten atomically when that
changes, never per poll. ``status`` reads it with ``<state_dir>/state.json`` and prints the
current or last notice, each hook's and action's result and the outcome. Its exit code is
:data:`DRAIN_UNDER_WAY` while a drain or resume is unfinished, else 0.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Optional

from agent.report.runtime import RUNTIME_FILE
from agent.state import read_boot_id

if TYPE_CHECKING:  # pragma: no cover
    from agent.config import Config


STATE_FILE = "state.json"
IDLE = 0
"""Exit code of ``status``: no drain under way (idle, or every notice finished)."""
DRAIN_UNDER_WAY = 10
"""Exit code of ``status``: a notice's drain or resume has not finished."""
FINISHED_STATUSES = ("drained", "confirmed", "not-confirmed", "withdrawn")
"""State statuses of a notice whose run is over; any other (draining, resuming, one a newer
agent wrote) is under way, as the agent itself counts it."""


# -- preempt-agent status --------------------------------------------------------------------


def _read(path: Path) -> tuple[Optional[dict[str, Any]], str]:
    """A JSON object from ``path``, or None and why not ("" when the file is simply absent)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"
    if not isinstance(data, dict):
        return None, f"{path} is not a JSON object"
    return data, ""


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _left(deadline: Optional[str], now: datetime) -> Optional[int]:
    from agent.notice import parse_rfc3339

    if not deadline:
        return None
    try:
        return int((parse_rfc3339(deadline) - now).total_seconds())
    except ValueError:
        return None


def _hooks(phases: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """``{phase: {name: result}}``, each phase in the order its hooks started."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if not isinstance(phases, dict):
        return out
    for phase, results in phases.items():
        if not isinstance(results, dict):
            continue
        ordered = sorted(
            ((n, r) for n, r in results.items() if isinstance(r, dict)),
            key=lambda item: (str(item[1].get("started", "")), item[0]),
        )
        out[str(phase)] = {
            name: {k: result.get(k) for k in ("outcome", "duration", "exit_code", "detail")}
            for name, result in ordered
        }
    return out


def _entry(notice: dict[str, Any], status: str, hooks: Any, detail: str, now: datetime) -> dict:
    deadline = notice.get("deadline")
    return {
        "event_id": notice.get("event_id"),
        "provider": notice.get("provider"),
        "kind": notice.get("kind"),
        "action": notice.get("action"),
        "instance_id": notice.get("instance_id"),
        "detected_at": notice.get("detected_at"),
        "deadline": deadline,
        "seconds_left": _left(deadline, now),
        "status": status,
        "under_way": status not in FINISHED_STATUSES,
        "detail": detail,
        "hooks": _hooks(hooks),
    }


def gather(state_dir: Path, boot_id: str, now: datetime) -> tuple[dict[str, Any], list[str]]:
    """What ``status`` reports, as one JSON-able object, and the problems met reading it."""
    problems: list[str] = []
    runtime, why = _read(state_dir / RUNTIME_FILE)
    if why:
        problems.append(why)
    state, why = _read(state_dir / STATE_FILE)
    if why:
        problems.append(why)
    runtime = runtime or {}
    notices: list[dict[str, Any]] = []
    if state is not None and state.get("boot_id") != boot_id:
        state = None  # an earlier boot's: the agent ignores it too
    records = (state or {}).get("notices")
    for record in (records if isinstance(records, dict) else {}).values():
        if not isinstance(record, dict) or not isinstance(record.get("notice"), dict):
            continue
        detail = next(
            (record[k] for k in ("confirmation", "withdrawn") if isinstance(record.get(k), str)),
            "",
        )
        notices.append(
            _entry(record["notice"], str(record.get("status")), record.get("hooks"), detail, now)
        )
    notices.sort(key=lambda n: str(n.get("detected_at") or ""))
    last = runtime.get("last")
    if not notices and isinstance(last, dict) and isinstance(last.get("notice"), dict):
        # A withdrawn notice's record is dropped once it leaves metadata; the agent's own
        # account of it remains (this boot's only: the runtime file is rewritten at start).
        if runtime.get("boot_id", boot_id) == boot_id:
            notices.append(
                _entry(last["notice"], str(last.get("outcome")), last.get("hooks"), "", now)
            )
    running = _alive(runtime.get("pid")) and not runtime.get("stopped")
    report = {
        "running": running,
        "pid": runtime.get("pid"),
        "cloud": runtime.get("cloud") or next((n["provider"] for n in notices), None),
        "watching": runtime.get("watchers", []),
        "doing": runtime.get("status") if running else None,
        "updated": runtime.get("updated"),
        "state_dir": str(state_dir),
        "drain_under_way": any(n["under_way"] for n in notices),
        "notices": notices,
    }
    return report, problems


def _print(report: dict[str, Any], problems: list[str], out: IO[str]) -> None:
    if report["running"]:
        head = f"running (pid {report['pid']})"
    elif report["updated"]:
        head = f"not running (last seen {report['updated']})"
    else:
        head = f"not running (no sign of a run in {report['state_dir']})"
    print(f"preempt-agent: {head}", file=out)
    print(f"  cloud: {report['cloud'] or 'unknown'}", file=out)
    if report["watching"]:
        print(f"  watching: {', '.join(report['watching'])}", file=out)
    if report["doing"]:
        print(f"  doing: {report['doing']}", file=out)
    for problem in problems:
        print(f"  problem: {problem}", file=out)
    if not report["notices"]:
        print("no notice in this boot", file=out)
    for notice in report["notices"]:
        print(
            f"notice {notice['event_id']}: {notice['kind']} ({notice['action']}), "
            f"instance {notice['instance_id']}",
            file=out,
        )
        left = notice["seconds_left"]
        when = "" if left is None else (f" ({left} s left)" if left > 0 else " (passed)")
        print(f"  deadline: {notice['deadline'] or 'none given'}{when}", file=out)
        detail = f": {notice['detail']}" if notice["detail"] else ""
        under_way = " (under way)" if notice["under_way"] else ""
        print(f"  status: {notice['status']}{under_way}{detail}", file=out)
        for phase, results in notice["hooks"].items():
            print(f"  {phase}:", file=out)
            width = max((len(name) for name in results), default=0)
            for name, result in results.items():
                code = result.get("exit_code")
                extra = f" exit {code}" if code not in (None, 0) else ""
                extra += f": {result['detail']}" if result.get("detail") else ""
                duration = float(result.get("duration") or 0.0)
                print(
                    f"    {name:<{width}}  {result.get('outcome')!s:<8} {duration:7.1f} s{extra}",
                    file=out,
                )


def show(config: Config, as_json: bool = False, out: Optional[IO[str]] = None) -> int:
    """``preempt-agent status``: print the report; :data:`DRAIN_UNDER_WAY` or :data:`IDLE`."""
    out = out or sys.stdout
    report, problems = gather(Path(config.state_dir), read_boot_id(), datetime.now(timezone.utc))
    if as_json:
        print(json.dumps({**report, "problems": problems}, indent=1, sort_keys=True), file=out)
    else:
        _print(report, problems, out)
    return DRAIN_UNDER_WAY if report["drain_under_way"] else IDLE
