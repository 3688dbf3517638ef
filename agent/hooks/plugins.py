"""Python hooks from installed packages, through the ``preempt_agent.hooks`` entry points.

A plugin is a function ``drain(notice: dict, context: dict)`` or an object with ``drain``
and optionally ``resume`` methods, and optional ``kinds`` (read as scripts' are, by
:func:`agent.hooks.parse_kinds`) and ``timeout`` attributes. It
runs in its own process (``python -m agent.hooks.plugin_host NAME PHASE``), so the same
deadline, kill and output rules apply to it as to a script. Even finding out what plugins
handle happens in a child process (``plugin_host --describe``) under a timeout: the daemon
never imports plugin code, so an import that hangs, crashes or exits cannot hurt it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from importlib import metadata
from typing import Any

from agent.hooks import DRAIN, RESUME, Hook, Refused, parse_kinds
from agent.interpreter import python_command, python_env
from agent.systemd import hook_environment

LOG = logging.getLogger(__name__)

GROUP = "preempt_agent.hooks"
DESCRIBE_TIMEOUT = 15.0
MARKER = "preempt-agent-plugins: "
"""Prefix of the describe answer's line, so what plugins print on import is not mistaken."""


def entry_points() -> list[Any]:
    """The group's entry points by name, each once (Python 3.9 lists a distribution that is
    on the path twice twice). Reads metadata only; imports nothing."""
    eps = metadata.entry_points()
    found = eps.select(group=GROUP) if hasattr(eps, "select") else eps.get(GROUP, [])
    unique = {ep.name: ep for ep in reversed(list(found))}  # the first on the path wins
    return [unique[name] for name in sorted(unique)]


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


def describe(ep: Any) -> dict[str, Any]:
    """What one plugin handles, or why it cannot run. Runs in the describe child only."""
    entry = {"name": ep.name, "value": ep.value}
    try:
        target = ep.load()
        if phase_function(target, DRAIN) is None:
            raise ValueError("neither callable nor has drain()")
        timeout = getattr(target, "timeout", None)
        if timeout is not None and not float(timeout) > 0:
            raise ValueError(f"timeout must be a number above 0, not {timeout!r}")
        entry.update(
            kinds=sorted(parse_kinds(getattr(target, "kinds", None))),
            timeout=float(timeout) if timeout is not None else None,
            resume=phase_function(target, RESUME) is not None,
        )
    except BaseException as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
    return entry


def describe_all() -> str:
    """The describe child's answer: one marked line of JSON."""
    return MARKER + json.dumps([describe(ep) for ep in entry_points()])


def discover(timeout: float = DESCRIBE_TIMEOUT) -> tuple[list[Hook], list[Refused]]:
    """Plugin hooks, described by a child process so that no plugin code runs in the agent."""
    if not entry_points():
        return [], []
    try:
        child = subprocess.run(
            python_command("agent.hooks.plugin_host", "--describe"),
            env=python_env(hook_environment(os.environ)),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            check=False,
        )
    except subprocess.TimeoutExpired:
        why = f"describing the plugins took more than {timeout:.0f} s (an import that hangs?)"
        return [], [Refused("plugins", why)]
    except OSError as exc:
        return [], [Refused("plugins", f"cannot start the plugin host: {exc}")]
    answer = [line for line in child.stdout.splitlines() if line.startswith(MARKER)]
    if child.returncode != 0 or not answer:
        tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return [], [
            Refused("plugins", f"describing the plugins failed ({child.returncode}): {tail}")
        ]
    hooks: list[Hook] = []
    refused: list[Refused] = []
    for entry in json.loads(answer[-1][len(MARKER) :]):
        name = f"plugin:{entry['name']}"
        if "error" in entry:
            refused.append(Refused(name, f"cannot load {entry['value']}: {entry['error']}"))
            continue
        hooks.append(
            Hook(
                name=name,
                argv=python_command("agent.hooks.plugin_host", entry["name"]),
                origin=entry["value"],
                kinds=frozenset(entry["kinds"]),
                resume=entry["resume"],
                timeout=entry["timeout"],
                imports_agent=True,
            )
        )
    return hooks, refused
