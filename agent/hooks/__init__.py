"""Drain hooks: what they are, where they come from, and how they run under a deadline."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional, Union

from agent.notice import KINDS, TERMINAL_KINDS

DRAIN = "drain"
RESUME = "resume"
PHASES = (DRAIN, RESUME)


@dataclass(frozen=True)
class Hook:
    """A runnable hook. Each one runs as its own process, so any of them can be killed."""

    name: str
    argv: tuple[str, ...]
    origin: str
    kinds: frozenset[str] = TERMINAL_KINDS
    resume: bool = False
    timeout: Optional[float] = None
    imports_agent: bool = False
    """Runs agent code (the plugin host), so it gets the agent's import path."""

    def handles(self, kind: str, phase: str) -> bool:
        return kind in self.kinds and (phase == DRAIN or self.resume)


@dataclass(frozen=True)
class Refused:
    """A hook file or plugin that will not run, and why (``check`` prints these)."""

    name: str
    reason: str


def parse_kinds(value: Union[str, Iterable[str], None]) -> frozenset[str]:
    """The notice kinds a hook handles, by one rule for scripts' headers and plugins alike.

    ``None`` (not given) means the terminations. Otherwise a comma-separated string or a
    list of kind names; spaces around a name are ignored, ``all`` means every kind, and an
    unknown or empty name is an error (a typo must not make a hook silently never run).
    """
    if value is None:
        return TERMINAL_KINDS
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise ValueError(f"kinds must be a string or a list of names, not {value!r}")
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"kinds must be names, got {items!r}")
    names = [item.strip() for item in items]
    if not names or "" in names:
        raise ValueError(f"empty kind in {value!r} (known: {', '.join(KINDS)}, all)")
    if "all" in names:
        return frozenset(KINDS)
    unknown = sorted(set(names) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown} (known: {', '.join(KINDS)}, all)")
    return frozenset(names)
