"""The state file's I/O: read it for this boot, write it whole and atomically.

What the records mean, and every change to them, belongs to :mod:`agent.lifecycle`, the
only writer. The file is keyed by the kernel's boot id: records from an earlier boot are
dropped on load, so an old notice can neither re-trigger hooks nor block a new one. Writing
is best effort: a full disk is logged loudly once, and the drain goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
FILE_NAME = "state.json"
VERSION = 1

Records = dict[str, dict[str, Any]]


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        LOG.warning("cannot read the boot id from %s; state will not survive this process", path)
        return f"unknown-{os.getpid()}"


class StateFile:
    """``{"version", "boot_id", "notices": {event_id: record}}`` on disk.

    Keys this version does not know (a newer agent wrote the file) are kept as they are and
    written back, so a downgrade and an upgrade lose nothing.
    """

    def __init__(self, state_dir: Path, boot_id: str) -> None:
        self.path = state_dir / FILE_NAME
        self.boot_id = boot_id
        self._extra: dict[str, Any] = {}
        self._write_failing = False

    def load(self) -> Records:
        """This boot's records; {} for none, another boot's file, or a damaged one (moved aside)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            LOG.error("cannot read state file %s: %s; starting with no state", self.path, exc)
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("notices"), dict):
                raise ValueError("not a state object")
            for record in data["notices"].values():
                if not isinstance(record, dict):
                    raise ValueError("a notice record is not an object")
        except ValueError as exc:
            self.set_aside(str(exc))
            return {}
        if data.get("boot_id") != self.boot_id:
            LOG.info("state file %s is from an earlier boot; ignoring it", self.path)
            return {}
        version = data.get("version")
        if version != VERSION:
            LOG.warning(
                "state file %s has version %r, this agent writes %d: unknown fields are kept",
                self.path,
                version,
                VERSION,
            )
        self._extra = {k: v for k, v in data.items() if k not in ("version", "boot_id", "notices")}
        return data["notices"]  # type: ignore[no-any-return]

    def set_aside(self, why: str) -> None:
        """Move a damaged file out of the way, keeping it for a post-mortem."""
        aside = self.path.with_name(f"{FILE_NAME}.damaged")
        with contextlib.suppress(OSError):
            os.replace(self.path, aside)
        LOG.error(
            "state file %s is damaged (%s); moved to %s, starting fresh", self.path, why, aside
        )

    def save(self, records: Records) -> bool:
        """Write every record at once; False (logged once until it works again) on failure."""
        data = {**self._extra, "version": VERSION, "boot_id": self.boot_id, "notices": records}
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
            return True
        except OSError as exc:
            if not self._write_failing:
                LOG.error(
                    "cannot write state file %s: %s; the drain goes on, but a restart may run "
                    "finished hooks again",
                    self.path,
                    exc,
                )
            self._write_failing = True
            return False
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
