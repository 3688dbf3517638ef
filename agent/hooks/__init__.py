"""Drain hooks: what they are, where they come from, and how they run under a deadline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from agent.notice import TERMINAL_KINDS

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
