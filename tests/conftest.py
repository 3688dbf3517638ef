"""Suite-wide: the test process itself may reach loopback only; shared fixtures."""

from __future__ import annotations

import importlib.util
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
    confirmation (tests/test_daemon_confirm.py); every one made is stopped at the end."""
    from tests.test_daemon_confirm import TIMEOUT, Harness

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
