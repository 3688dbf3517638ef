"""systemd integration: readiness, status, watchdog and stop-timeout extension.

Uses systemd-python when it is installed and the agent runs under a notify socket; in every
other case the notifier does nothing, so the agent runs the same outside systemd.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Callable, Optional

LOG = logging.getLogger(__name__)

HOOK_ENV_STRIP = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)
"""Variables that would let a hook speak to systemd on the agent's behalf."""


class Notifier:
    """Sends sd_notify messages; every method is a no-op when ``send`` is None."""

    def __init__(
        self,
        send: Optional[Callable[[str], object]] = None,
        watchdog_interval: Optional[float] = None,
        monotonic: Optional[Callable[[], float]] = None,
    ) -> None:
        self._send = send
        self.watchdog_interval = watchdog_interval
        self._monotonic = monotonic or _monotonic
        self._last_ping = float("-inf")
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def _notify(self, message: str) -> None:
        if self._send is None:
            return
        try:
            self._send(message)
        except OSError as exc:  # systemd restarting, socket gone: never fatal
            LOG.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self._last_status = status
        self._notify(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._notify(f"STATUS={text}")

    def ping(self) -> None:
        """WATCHDOG=1, at most four times per watchdog interval however often it is called."""
        if self.watchdog_interval is None:
            return
        now = self._monotonic()
        if now - self._last_ping >= self.watchdog_interval / 4:
            self._last_ping = now
            self._notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd to wait ``seconds`` more before killing us during a stop."""
        self._notify(f"EXTEND_TIMEOUT_USEC={int(max(seconds, 1) * 1_000_000)}")

    def stopping(self, status: str) -> None:
        self._notify(f"STOPPING=1\nSTATUS={status}")


def _monotonic() -> float:
    import time

    return time.monotonic()


def notifier_from_env(env: Mapping[str, str] = os.environ) -> Notifier:
    if not env.get("NOTIFY_SOCKET"):
        return Notifier()
    try:
        from systemd import daemon
    except ImportError:
        LOG.warning(
            "NOTIFY_SOCKET is set but systemd-python is not installed: systemd will never hear "
            "READY=1 and a Type=notify unit times out; install python3-systemd (or systemd-python)"
        )
        return Notifier()
    interval = None
    usec = env.get("WATCHDOG_USEC", "")
    if usec.isdigit() and env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
        interval = int(usec) / 1_000_000
    return Notifier(send=daemon.notify, watchdog_interval=interval)


def hook_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment minus what belongs to the agent's own systemd contract."""
    return {k: v for k, v in env.items() if k not in HOOK_ENV_STRIP}


def under_journal(env: Mapping[str, str] = os.environ, stderr_fd: int = 2) -> bool:
    """True when stderr is journald's stream for this service (systemd's JOURNAL_STREAM)."""
    stream = env.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(stderr_fd)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"
