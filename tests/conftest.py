"""Suite-wide: the test process itself may reach loopback only; shared fixtures."""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

GUARD_DIR = Path(__file__).parent / "guard"

_spec = importlib.util.spec_from_file_location("_network_guard", GUARD_DIR / "sitecustomize.py")
assert _spec is not None and _spec.loader is not None
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``harness(confirm_fn, **config)``: the daemon in a thread with scripted watchers and
    confirmation (tests.test_loop_confirm.py); every one made is stopped at the end."""
    from tests.test_loop_confirm import TIMEOUT, Harness

    made: list[Harness] = []

    def make(confirm_fn: Callable[..., Any], **config: Any) -> Harness:
        h = Harness(tmp_path, confirm_fn, **config)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.thread.is_alive():
            h.stop()
            h.thread.join(TIMEOUT)


@pytest.fixture(autouse=True)
def _no_stray_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, end whatever still runs from its temp folder: hooks of a daemon the
    test stopped mid-drain, which systemd's KillMode=mixed would end on a real host."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is None:
        return
    needle = str(tmp).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
