"""What the agent has handled in this boot, written atomically so a restart resumes a drain.

The file is keyed by the kernel's boot id: a record from an earlier boot is dropped on load,
so an old notice can neither re-trigger hooks nor block a new one. Writing is best effort:
a full disk is logged loudly, and the drain goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

from agent.notice import Notice

LOG = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
FILE_NAME = "state.json"
VERSION = 1

DRAINING = "draining"
DRAINED = "drained"
CONFIRMED = "confirmed"
NOT_CONFIRMED = "not-confirmed"
WITHDRAWN = "withdrawn"
RESUMING = "resuming"
UNFINISHED = (DRAINING, RESUMING)


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        LOG.warning("cannot read the boot id from %s; state will not survive this process", path)
        return f"unknown-{os.getpid()}"


class StateStore:
    """Notice records for this boot: ``{event_id: {"notice", "status", "hooks"}}``."""

    def __init__(self, state_dir: Path, boot_id: str) -> None:
        self.path = state_dir / FILE_NAME
        self.boot_id = boot_id
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._write_failing = False

    def load(self) -> None:
        """Read the file; drop it if it belongs to another boot, set it aside if damaged."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            LOG.error("cannot read state file %s: %s; starting with no state", self.path, exc)
            return
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("notices"), dict):
                raise ValueError("not a state object")
            for record in data["notices"].values():
                Notice.from_dict(record["notice"])
                hooks = record["hooks"]
                if not isinstance(record["status"], str) or not isinstance(hooks, dict):
                    raise ValueError("a notice record has a bad status or hooks field")
                if not all(isinstance(results, dict) for results in hooks.values()):
                    raise ValueError("a notice record's hook results are not tables")
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{FILE_NAME}.damaged")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            LOG.error(
                "state file %s is damaged (%s); moved to %s, starting fresh", self.path, exc, aside
            )
            return
        if data.get("boot_id") != self.boot_id:
            LOG.info("state file %s is from an earlier boot; ignoring it", self.path)
            return
        self._records = data["notices"]

    def get(self, event_id: str) -> Optional[dict[str, Any]]:
        with self._lock:
            record = self._records.get(event_id)
            return json.loads(json.dumps(record)) if record else None

    def unfinished(self) -> list[Notice]:
        """Notices whose drain or resume a previous process of this boot started or queued
        and did not finish (their status says which)."""
        with self._lock:
            return [
                Notice.from_dict(r["notice"])
                for r in self._records.values()
                if r["status"] in UNFINISHED
            ]

    def start(self, notice: Notice) -> None:
        """Record that a drain of ``notice`` begins (keeping hook results already there)."""
        with self._lock:
            record = self._records.setdefault(notice.event_id, {"hooks": {}})
            record["notice"] = notice.to_dict()
            record["status"] = DRAINING
            self._save()

    def hook_result(self, event_id: str, phase: str, hook: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._records[event_id]["hooks"].setdefault(phase, {})[hook] = result
            self._save()

    def finished_hooks(self, event_id: str, phase: str) -> set[str]:
        with self._lock:
            record = self._records.get(event_id) or {}
            return set(record.get("hooks", {}).get(phase, {}))

    def set_status(self, event_id: str, status: str, **details: Any) -> None:
        with self._lock:
            record = self._records[event_id]
            record["status"] = status
            record.update(details)
            self._save()

    def forget(self, event_id: str) -> None:
        """Drop a record, so the same interruption can be handled afresh (after a withdrawal)."""
        with self._lock:
            self._records.pop(event_id, None)
            self._save()

    def _save(self) -> None:
        data = {"version": VERSION, "boot_id": self.boot_id, "notices": self._records}
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            tmp = None
            if self._write_failing:
                LOG.info("state file %s written again", self.path)
            self._write_failing = False
        except OSError as exc:
            if not self._write_failing:
                LOG.error(
                    "cannot write state file %s: %s; the drain goes on, but a restart may run "
                    "finished hooks again",
                    self.path,
                    exc,
                )
            self._write_failing = True
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
