"""Python hooks from installed packages, through the ``preempt_agent.hooks`` entry points.

A plugin is a function ``drain(notice: dict, context: dict)`` or an object with ``drain``
and optionally ``resume`` methods, and optional ``kinds`` and ``timeout`` attributes. It
runs in its own process (``python -m agent.hooks.plugin_host NAME``), so the same deadline,
kill and output rules apply to it as to a script, and a broken plugin cannot hurt the agent.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

from agent.hooks import DRAIN, RESUME, Hook, Refused
from agent.interpreter import python_command
from agent.notice import KINDS, TERMINAL_KINDS

LOG = logging.getLogger(__name__)

GROUP = "preempt_agent.hooks"


def entry_points() -> list[Any]:
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return sorted(eps.select(group=GROUP), key=lambda ep: ep.name)
    return sorted(eps.get(GROUP, []), key=lambda ep: ep.name)  # Python 3.9


def load(name: str) -> Any:
    """The object behind entry point ``name`` (imports the plugin's module)."""
    for ep in entry_points():
        if ep.name == name:
            return ep.load()
    raise LookupError(f"no {GROUP} entry point named {name!r}")


def phase_function(target: Any, phase: str) -> Any:
    if phase == DRAIN:
        return getattr(target, "drain", None) or (target if callable(target) else None)
    return getattr(target, RESUME, None)


def discover() -> tuple[list[Hook], list[Refused]]:
    hooks: list[Hook] = []
    refused: list[Refused] = []
    for ep in entry_points():
        name = f"plugin:{ep.name}"
        try:
            target = ep.load()
        except Exception as exc:  # any import error of user code refuses only that plugin
            refused.append(Refused(name, f"cannot load {ep.value}: {type(exc).__name__}: {exc}"))
            continue
        if phase_function(target, DRAIN) is None:
            refused.append(Refused(name, f"{ep.value} is neither callable nor has drain()"))
            continue
        kinds = frozenset(getattr(target, "kinds", TERMINAL_KINDS))
        if not kinds <= set(KINDS):
            refused.append(Refused(name, f"unknown kinds {sorted(kinds - set(KINDS))}"))
            continue
        timeout = getattr(target, "timeout", None)
        hooks.append(
            Hook(
                name=name,
                argv=python_command("agent.hooks.plugin_host", ep.name),
                origin=ep.value,
                kinds=kinds,
                resume=phase_function(target, RESUME) is not None,
                timeout=float(timeout) if timeout else None,
                imports_agent=True,
            )
        )
    return hooks, refused
