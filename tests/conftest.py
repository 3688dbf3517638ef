"""Suite-wide safety: the test process itself may reach loopback only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

GUARD_DIR = Path(__file__).parent / "guard"

_spec = importlib.util.spec_from_file_location("_network_guard", GUARD_DIR / "sitecustomize.py")
assert _spec is not None and _spec.loader is not None
_spec.loader.exec_module(importlib.util.module_from_spec(_spec))
