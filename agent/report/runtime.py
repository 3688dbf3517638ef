"""The running agent's ``<state_dir>/runtime.json``: what it is doing, for ``status``.

Pid, cloud, watchers, its status text and the last notice's outcome, rewritten atomically
when that changes, never per poll. :mod:`agent.report.status` reads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agent import __version__
from agent.clock import utc_rfc3339
from agent.state import read_boot_id

if TYPE_CHECKING:  # pragma: no cover
    from agent.hooks.runner import HookResult
    from agent.notice import Notice

LOG = logging.getLogger("agent.report.status")
"""``status``'s logger: a failing write is said under that name, as before."""

RUNTIME_FILE = "runtime.json"
VERSION = 1


def _utc(now: datetime) -> str:
    return utc_rfc3339(now)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old or the new file whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StatusReporter:
    """Keeps ``<state_dir>/runtime.json`` up to date (a :class:`agent.report.Reporter`)."""

    def __init__(
        self,
        state_dir: Path,
        cloud: str,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.path = Path(state_dir) / RUNTIME_FILE
        self._now = now
        self._lock = threading.Lock()
        self._failing = False
        self._results: dict[str, dict[str, dict[str, Any]]] = {}
        self._data: dict[str, Any] = {
            "version": VERSION,
            "pid": os.getpid(),
            "agent_version": __version__,
            "boot_id": read_boot_id(),
            "cloud": cloud,
            "watchers": [],
            "status": "starting",
            "started": _utc(now()),
            "current": None,
            "last": None,
        }
        self._write()

    def status(self, text: str) -> None:
        with self._lock:
            if text == self._data["status"]:
                return
            self._data["status"] = text
        self._write()

    def polled(self, watcher: str, ok: bool) -> None:
        if watcher in self._data["watchers"]:  # the common case: no lock, no write
            return
        with self._lock:
            self._data["watchers"] = sorted({*self._data["watchers"], watcher})
        self._write()

    def notice(self, notice: Notice, deadline: datetime) -> None:
        with self._lock:
            self._results = {}
            self._data["current"] = {
                "notice": notice.to_dict(),
                "deadline": _utc(deadline),
                "started": _utc(self._now()),
            }
        self._write()

    def hook_result(self, notice: Notice, phase: str, result: HookResult) -> None:
        with self._lock:
            self._results.setdefault(phase, {})[result.hook] = result.to_dict()

    def outcome(self, notice: Notice, outcome: str, record: dict[str, Any]) -> None:
        hooks = (record or {}).get("hooks")
        with self._lock:
            if not isinstance(hooks, dict) or not hooks:
                hooks = json.loads(json.dumps(self._results))
            current = self._data.get("current") or {}
            if current.get("notice", {}).get("event_id") == notice.event_id:
                self._data["current"] = None
            self._data["last"] = {
                "notice": notice.to_dict(),
                "deadline": current.get("deadline") or notice.to_dict()["deadline"],
                "outcome": outcome,
                "hooks": hooks,
                "at": _utc(self._now()),
            }
        self._write()

    def close(self, grace: float) -> None:
        with self._lock:
            self._data["stopped"] = _utc(self._now())
        self._write()

    def _write(self) -> None:
        with self._lock:
            self._data["updated"] = _utc(self._now())
            data = json.loads(json.dumps(self._data))
        try:
            write_json(self.path, data)
        except OSError as exc:
            if not self._failing:
                LOG.warning("cannot write %s: %s (status will not see it)", self.path, exc)
            self._failing = True
            return
        self._failing = False
