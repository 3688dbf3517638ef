"""Which notices are still in the metadata service, and which have left it.

A pure bookkeeper: it hears each successful poll and answers which notices are gone (absent
from ``GONE_POLLS`` answers in a row of the watcher that reported them) and how long each has
been there. It changes no state and touches no run; the loop and :mod:`agent.decisions`
decide what a departure means.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

from agent.notice import Notice

GONE_POLLS = 2
"""Successful polls in a row without a notice before it counts as gone from metadata."""


@dataclass
class Tracked:
    notice: Notice
    watcher: Optional[str]  # None: known from the state file, not seen by a watcher yet
    since: float  # first seen, or when its drain ended
    misses: dict[str, int] = field(default_factory=dict)


class Presence:
    def __init__(self, watchers: Iterable[str] = ()) -> None:
        self.watchers = list(watchers)
        self.tracked: dict[str, Tracked] = {}

    def track(self, notice: Notice, now: float) -> None:
        """A notice the agent acts on before (or without) a watcher reporting it."""
        self.tracked.setdefault(notice.event_id, Tracked(notice, None, now))

    def restart(self, event_id: str, now: float) -> None:
        """Count its age from now (its drain just ended)."""
        tracked = self.tracked.get(event_id)
        if tracked is not None:
            tracked.since = now

    def drop(self, event_id: str) -> None:
        self.tracked.pop(event_id, None)

    def age(self, event_id: str, now: float) -> float:
        tracked = self.tracked.get(event_id)
        return now - tracked.since if tracked else 0.0

    def gone(self, event_id: str) -> bool:
        tracked = self.tracked.get(event_id)
        return tracked is not None and self._gone(tracked)

    def all_gone(self) -> list[Tracked]:
        """The tracked notices gone by now (a run that held up their decision is over)."""
        return [t for t in self.tracked.values() if self._gone(t)]

    def observe(self, watcher: str, notices: list[Notice], now: float) -> list[Tracked]:
        """After a poll of ``watcher`` that answered: the tracked notices now gone."""
        present = {n.event_id for n in notices}
        for notice in notices:
            tracked = self.tracked.get(notice.event_id)
            if tracked is None:
                tracked = self.tracked[notice.event_id] = Tracked(notice, watcher, now)
            tracked.watcher = watcher
            tracked.misses.clear()
        gone = []
        for event_id, tracked in self.tracked.items():
            if event_id in present or tracked.watcher not in (None, watcher):
                continue
            tracked.misses[watcher] = tracked.misses.get(watcher, 0) + 1
            if self._gone(tracked):
                gone.append(tracked)
        return gone

    def _gone(self, tracked: Tracked) -> bool:
        if tracked.watcher is not None:
            return tracked.misses.get(tracked.watcher, 0) >= GONE_POLLS
        # From the state file: gone once every watcher has missed it.
        names = self.watchers
        return bool(names) and all(tracked.misses.get(n, 0) >= GONE_POLLS for n in names)
