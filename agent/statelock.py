"""One agent per state directory: an exclusive lock on ``<state_dir>/lock``.

Two agents on one state directory would both drain, and every hook would run twice at the
same time. ``run`` takes the lock before anything else and holds it until the process
ends; the kernel releases it however the process ends, so a crash leaves no stale lock and
a restart takes it at once. The holder's pid is written into the file so that a second
agent can say who holds it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Optional

LOG = logging.getLogger(__name__)

NAME = "lock"


class AlreadyRunning(Exception):
    """Another process holds the lock; ``pid`` is the one it wrote, None when unreadable."""

    def __init__(self, path: Path, pid: Optional[int]) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path} is held by {who}: a preempt-agent already runs on it")
        self.path = path
        self.pid = pid


class StateLock:
    """The held lock; keep it for as long as the agent runs (``release`` for tests)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1


def acquire(state_dir: Path) -> StateLock:
    """Take the lock or raise :class:`AlreadyRunning`; OSError when it cannot be tried."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / NAME
    # Never truncated on open: a loser must not erase the holder's pid. CLOEXEC, so no hook
    # inherits the lock and keeps it after the agent is gone.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise AlreadyRunning(path, holder) from None
    except OSError:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateLock(path, fd)


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
