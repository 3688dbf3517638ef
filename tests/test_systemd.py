"""systemd integration over a real notify socket, the hooks' environment, journal detection."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import systemd as sd
from agent.systemd import Notifier, hook_environment, notifier_from_env, under_journal

try:
    from systemd import daemon as _daemon  # noqa: F401
except ImportError:  # pragma: no cover - depends on the host
    HAVE_SYSTEMD_PYTHON = False
else:
    HAVE_SYSTEMD_PYTHON = True

needs_systemd_python = pytest.mark.skipif(
    not HAVE_SYSTEMD_PYTHON, reason="systemd-python (systemd.daemon) is not installed"
)


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def messages(self) -> list[str]:
        """Every datagram received so far (sd_notify sends synchronously, so no waiting)."""
        found = []
        while True:
            try:
                found.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return found

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 108 bytes"
    server = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    yield server
    server.close()


class Ticker:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


# -- Notifier over a real socket ----------------------------------------------------------------


@needs_systemd_python
def test_ready_sends_ready_and_status(notify_socket: NotifySocket) -> None:
    notifier = notifier_from_env(os.environ)
    assert notifier.enabled
    notifier.ready("watching aws: spot, rebalance")
    assert notify_socket.messages() == ["READY=1\nSTATUS=watching aws: spot, rebalance"]


@needs_systemd_python
def test_status_is_sent_only_when_it_changes(notify_socket: NotifySocket) -> None:
    notifier = notifier_from_env(os.environ)
    notifier.ready("watching")
    notifier.status("watching")
    notifier.status("draining aws:i-1:spot-interruption")
    notifier.status("draining aws:i-1:spot-interruption")
    notifier.status("watching")
    assert notify_socket.messages() == [
        "READY=1\nSTATUS=watching",
        "STATUS=draining aws:i-1:spot-interruption",
        "STATUS=watching",
    ]


@needs_systemd_python
def test_watchdog_pings_are_rate_limited(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticker = Ticker()
    monkeypatch.setattr(sd, "_monotonic", ticker)
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = notifier_from_env(os.environ)
    assert notifier.watchdog_interval == 20.0
    notifier.ping()
    for _ in range(10):
        ticker.t += 0.49  # 4.9 s in all: within a quarter of the interval
        notifier.ping()
    assert notify_socket.messages() == ["WATCHDOG=1"]
    ticker.t += 0.1
    notifier.ping()
    notifier.ping()
    assert notify_socket.messages() == ["WATCHDOG=1"]
    sent = 0
    for _ in range(20):  # 20 s, one watchdog interval, called every second
        ticker.t += 1
        notifier.ping()
        sent += len(notify_socket.messages())
    assert sent == 4


@needs_systemd_python
@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({}, "no watchdog"),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, "another process's watchdog"),
        ({"WATCHDOG_USEC": "soon"}, "unreadable"),
    ],
)
def test_no_watchdog_means_no_pings(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch, env: dict, why: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    notifier = notifier_from_env(os.environ)
    assert notifier.watchdog_interval is None, why
    notifier.ping()
    assert notify_socket.messages() == []


@needs_systemd_python
def test_watchdog_without_a_pid_is_ours(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    notifier = notifier_from_env(os.environ)
    assert notifier.watchdog_interval == 3.0
    notifier.ping()
    assert notify_socket.messages() == ["WATCHDOG=1"]


@needs_systemd_python
@pytest.mark.parametrize(
    ("seconds", "usec"), [(90, 90_000_000), (2.5, 2_500_000), (0.2, 1_000_000), (-5, 1_000_000)]
)
def test_extend_timeout(notify_socket: NotifySocket, seconds: float, usec: int) -> None:
    notifier_from_env(os.environ).extend_timeout(seconds)
    assert notify_socket.messages() == [f"EXTEND_TIMEOUT_USEC={usec}"]


@needs_systemd_python
def test_stopping(notify_socket: NotifySocket) -> None:
    notifier_from_env(os.environ).stopping("drained; exiting")
    assert notify_socket.messages() == ["STOPPING=1\nSTATUS=drained; exiting"]


@needs_systemd_python
def test_a_vanished_socket_is_not_fatal(
    notify_socket: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = notifier_from_env(os.environ)
    notify_socket.close()
    notify_socket.path.unlink()
    with caplog.at_level(logging.DEBUG, logger="agent.systemd"):
        notifier.ready("watching")
        notifier.status("draining")
        notifier.extend_timeout(10)
    assert caplog.messages[0].startswith("sd_notify failed: ")
    assert len(caplog.messages) == 3


@needs_systemd_python
def test_no_notify_socket_is_a_no_op(notify_socket: NotifySocket) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["WATCHDOG_USEC"] = "1000000"
    notifier = notifier_from_env(env)
    assert not notifier.enabled
    notifier.ready("watching")
    notifier.status("draining")
    notifier.ping()
    notifier.extend_timeout(30)
    notifier.stopping("bye")
    assert notify_socket.messages() == []


def test_empty_notify_socket_is_a_no_op() -> None:
    assert not notifier_from_env({"NOTIFY_SOCKET": ""}).enabled
    Notifier().ready("x")  # nothing to send to, nothing raised


def test_without_systemd_python_a_warning_and_a_no_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)
    monkeypatch.setitem(sys.modules, "systemd.daemon", None)
    with caplog.at_level(logging.WARNING, logger="agent.systemd"):
        notifier = notifier_from_env({"NOTIFY_SOCKET": "/run/systemd/notify"})
    assert not notifier.enabled
    assert "systemd-python is not installed" in caplog.text


def test_notifier_with_a_fake_sender() -> None:
    sent: list[str] = []
    ticker = Ticker()
    notifier = Notifier(send=sent.append, watchdog_interval=8.0, monotonic=ticker)
    notifier.ping()
    ticker.t += 1.9
    notifier.ping()
    ticker.t += 0.1
    notifier.ping()
    assert sent == ["WATCHDOG=1", "WATCHDOG=1"]


# -- the hooks' environment ---------------------------------------------------------------------


def test_hook_environment_strips_the_agents_systemd_contract() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "1234",
        "LISTEN_FDS": "1",
        "LISTEN_PID": "1234",
        "INVOCATION_ID": "abc",
    }
    assert hook_environment(env) == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "INVOCATION_ID": "abc",
    }
    assert "NOTIFY_SOCKET" in env, "the agent's own environment is left alone"


# -- journal detection --------------------------------------------------------------------------


@pytest.fixture
def stream_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "stderr", os.O_WRONLY | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def test_under_journal_when_the_stream_matches(stream_fd: int) -> None:
    st = os.fstat(stream_fd)
    assert under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream_fd)


@pytest.mark.parametrize(
    "value", ["", "12345", "{dev}:{other}", "{other}:{ino}", "journal"], ids=str
)
def test_not_under_journal_when_the_stream_differs(stream_fd: int, value: str) -> None:
    st = os.fstat(stream_fd)
    value = value.format(dev=st.st_dev, ino=st.st_ino, other=st.st_ino + 1)
    assert not under_journal({"JOURNAL_STREAM": value}, stream_fd)


def test_not_under_journal_without_the_variable_or_the_fd(stream_fd: int) -> None:
    assert not under_journal({}, stream_fd)
    st = os.fstat(stream_fd)
    closed = os.dup(stream_fd)
    os.close(closed)
    assert not under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, closed)
