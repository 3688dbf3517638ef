"""Starting another Python process that imports this agent, wherever it is installed.

A packaged install keeps the agent and its bundled libraries in /usr/lib/preempt-agent,
which the system interpreter does not search; the children that run agent code (the plugin
host, the demo's daemon) get this process's import path. Script hooks never do: the bundled
libraries must not leak into users' own Python hooks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping


def python_command(module: str, *args: str) -> tuple[str, ...]:
    """``python -m module args`` with the interpreter running this agent."""
    return (sys.executable, "-m", module, *args)


def python_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus a PYTHONPATH that finds this agent, its bundled libraries and plugins."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env
