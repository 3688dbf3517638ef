"""A hook's processes: its stdin, its process group, and what a group leaves behind.

Every hook is the leader of its own process group, so the group is how the agent finds what
a hook started: at a timeout, after the hook exits, and after a restart (the group id is
recorded when the hook starts). Processes that leave the group with ``setsid`` are out of
reach; under systemd, ``KillMode=mixed`` ends them when the service stops.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

LOG = logging.getLogger(__name__)

POLL_STEP = 0.02
KILL_WAIT = 5.0
"""How long SIGKILL may take to end a group before the agent goes on regardless."""
PROC = Path("/proc")
EVENT = "PREEMPT_EVENT_ID"


def members(pgid: int) -> list[int]:
    """The live (not zombie) processes of group ``pgid``."""
    try:
        os.killpg(pgid, 0)  # cheap: nothing at all in the group is the common case
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def end_group(
    pgid: int,
    grace: float,
    done: Callable[[], bool] = lambda: True,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    """SIGTERM to group ``pgid``, SIGKILL once ``grace`` is over; return the signal that
    ended it (0 when nothing was left). ``done`` is also waited for (the leader's exit).

    Returns only once the group is gone, or ``KILL_WAIT`` after SIGKILL (a process stuck in
    the kernel): the next hook must not start beside what this one left.
    """

    def gone() -> bool:
        return done() and not members(pgid)

    if gone():
        return 0
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        until = monotonic() + max(0.0, wait)
        while not gone():
            if monotonic() >= until:
                break
            time.sleep(POLL_STEP)
        else:
            return sig
    LOG.warning("process group %d still has processes %s after SIGKILL", pgid, members(pgid))
    return signal.SIGKILL


def carries(pid: int, name: str, value: str) -> bool:
    """True when process ``pid`` has ``name=value`` in its environment."""
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{name}={value}".encode() in environ.split(b"\0")


def kill_leftover(pgid: int, event_id: str, grace: float = 5.0) -> bool:
    """End a hook's process group that an earlier agent process left running.

    After a crash the agent runs the interrupted hook again; first this ends the copy that
    may still be running. The group is ended only when its leader (or, once the leader has
    exited, a process still in it) carries ``PREEMPT_EVENT_ID=event_id``: a recorded group
    id may by now belong to something else. Call it before starting this event's hooks.
    True when a group was found and ended.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        return False
    found = members(pgid)
    ours = [pid for pid in ([pgid] if pgid in found else found) if carries(pid, EVENT, event_id)]
    if not ours:
        if found:
            LOG.info("process group %d is not a hook of %s; left alone", pgid, event_id)
        return False
    LOG.warning("ending process group %d, left running by an earlier agent for %s", pgid, event_id)
    end_group(pgid, grace)
    return True


class NoticeInput:
    """The notice as a hook's stdin, without touching the disk (a full disk must not stop a
    drain): a memfd, or where there is none, a pipe fed by a thread. A hook that never
    reads its stdin cannot block the agent either way."""

    def __init__(self, data: bytes) -> None:
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._write_fd = -1
        self.fd = self._memfd(data)
        if self.fd < 0:
            self.fd, self._write_fd = os.pipe()
            os.set_blocking(self._write_fd, False)
            self._thread = threading.Thread(
                target=self._feed, args=(data,), name="hook-stdin", daemon=True
            )
            self._thread.start()

    @staticmethod
    def _memfd(data: bytes) -> int:
        create = getattr(os, "memfd_create", None)
        if create is None:
            return -1
        try:
            fd = create("preempt-agent-notice", getattr(os, "MFD_CLOEXEC", 1))
        except OSError:
            return -1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError:
            os.close(fd)
            return -1
        return fd

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(self._write_fd, select.POLLOUT)
        try:
            while view and not self._stop.is_set():
                if not poller.poll(100):
                    continue
                try:
                    view = view[os.write(self._write_fd, view) :]
                except BlockingIOError:
                    continue
        except OSError as exc:  # EPIPE: the hook (and all it started) closed its stdin
            if exc.errno != errno.EPIPE:
                LOG.debug("feeding a hook's stdin: %s", exc)
        finally:
            os.close(self._write_fd)

    def started(self) -> None:
        """The child has its copy: drop the agent's (a pipe's feeder then sees EPIPE once
        the hook and all it started are done with it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
