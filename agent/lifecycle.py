"""A notice's lifecycle: every status, every transition, and the only writer of the state file.

::

    (none) ─start─▶ draining ─drained─▶ drained ─confirmed───────▶ confirmed
                    ▲  │                │  └─not-confirmed───▶ not-confirmed
                    └──┘ start again    │                            │ withdraw
                    (restart, cancel)   └─withdraw─▶ resuming ◀──────┘ (hibernate: back)
                                                      │    └─resumed─▶ withdrawn
                                       (none) ◀─forget┘                  │ forget
                                                                         ▼ (none)

``draining`` and ``resuming`` are unfinished: a restart in this boot takes them up again.
A status this version does not know (a newer agent wrote it) counts as unfinished, so a live
notice is drained rather than forgotten. An illegal transition raises under ``strict`` (the
tests) and is logged as an error in production, where the record is left as it was.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any, Optional

from agent.notice import Notice
from agent.state import Records, StateFile

LOG = logging.getLogger(__name__)

DRAINING = "draining"
DRAINED = "drained"
CONFIRMED = "confirmed"
NOT_CONFIRMED = "not-confirmed"
WITHDRAWN = "withdrawn"
RESUMING = "resuming"
STATUSES = (DRAINING, DRAINED, CONFIRMED, NOT_CONFIRMED, WITHDRAWN, RESUMING)
SETTLED = (DRAINED, CONFIRMED, NOT_CONFIRMED)
"""A termination whose drain (and confirmation) is over."""

# Events: what happened to a notice.
START = "start"
DRAIN_DONE = "drained"
CONFIRM = "confirmed"
NOT_CONFIRM = "not-confirmed"
WITHDRAW = "withdraw"
RESUME_DONE = "resumed"
UNANSWERED = "unanswered"  # the run ended without the API's answer: not confirmed again
FORGET = "forget"

UNKNOWN = "unknown"
"""Stands for any status this version does not know, in the table below."""

TRANSITIONS: dict[tuple[Optional[str], str], Optional[str]] = {
    (None, START): DRAINING,
    (DRAINING, START): DRAINING,  # after a restart, a cancel, or a re-confirmation
    (DRAINED, START): DRAINING,  # a termination drained, not yet confirmed when restarted
    (UNKNOWN, START): DRAINING,
    (DRAINING, DRAIN_DONE): DRAINED,
    (DRAINED, CONFIRM): CONFIRMED,
    (DRAINED, NOT_CONFIRM): NOT_CONFIRMED,
    (DRAINED, UNANSWERED): DRAINED,  # confirmation off, impossible, or cut short by a stop
    (DRAINED, WITHDRAW): RESUMING,
    (CONFIRMED, WITHDRAW): RESUMING,  # back from hibernation
    (NOT_CONFIRMED, WITHDRAW): RESUMING,
    (RESUMING, WITHDRAW): RESUMING,  # taken up again after a restart
    (RESUMING, RESUME_DONE): WITHDRAWN,  # still in metadata: kept so it does not drain again
    (RESUMING, FORGET): None,
    (WITHDRAWN, FORGET): None,
}
"""(status before, event) -> status after; None after is "no record"."""


class IllegalTransition(RuntimeError):
    pass


def status_key(status: Optional[str]) -> Optional[str]:
    return status if status is None or status in STATUSES else UNKNOWN


def unfinished(status: Optional[str]) -> bool:
    return status in (DRAINING, RESUMING) or status_key(status) == UNKNOWN


class Lifecycle:
    """This boot's notice records, changed only through :meth:`apply` and the hook results.

    Thread-safe: the loop applies transitions, the run's worker thread records hooks.
    """

    def __init__(self, file: StateFile, strict: bool = False) -> None:
        self.file = file
        self.strict = strict
        self._records: Records = {}
        self._lock = threading.RLock()

    def load(self) -> None:
        records = self.file.load()
        for event_id, record in records.items():
            try:
                Notice.from_dict(record["notice"])
                if not isinstance(record.get("status"), str):
                    raise ValueError("no status")
                hooks = record["hooks"]
                if not isinstance(hooks, dict) or not all(
                    isinstance(h, dict) for h in hooks.values()
                ):
                    raise ValueError("hook results are not tables")
            except (KeyError, ValueError, TypeError) as exc:
                self.file.set_aside(f"record {event_id!r}: {exc}")
                return
        self._records = records
        for event_id, record in records.items():
            if status_key(record["status"]) == UNKNOWN:
                LOG.warning(
                    "%s has status %r, unknown to this version: taken as unfinished",
                    event_id,
                    record["status"],
                )

    # -- reading ------------------------------------------------------------------------------

    def status(self, event_id: str) -> Optional[str]:
        with self._lock:
            record = self._records.get(event_id)
            return record["status"] if record else None

    def get(self, event_id: str) -> Optional[dict[str, Any]]:
        """A copy of the record, or None."""
        with self._lock:
            record = self._records.get(event_id)
            return copy.deepcopy(record) if record else None

    def all(self) -> Records:
        with self._lock:
            return copy.deepcopy(self._records)

    def unfinished(self, reconfirm: bool = False) -> list[tuple[Notice, dict[str, Any]]]:
        """Notices whose drain or resume an earlier process of this boot did not finish;
        with ``reconfirm``, also terminations drained when a crash came before the API's
        answer (a run that ended without one says so: ``unanswered``)."""
        with self._lock:
            found = []
            for record in self._records.values():
                notice = Notice.from_dict(record["notice"])
                unanswered = record["status"] == DRAINED and "confirmation" not in record
                if unfinished(record["status"]) or (reconfirm and notice.terminal and unanswered):
                    found.append((notice, copy.deepcopy(record)))
            return found

    def finished_hooks(self, event_id: str, phase: str) -> set[str]:
        with self._lock:
            record = self._records.get(event_id) or {}
            results = record.get("hooks", {}).get(phase, {})
            return {name for name, result in results.items() if result.get("finished", True)}

    # -- writing ------------------------------------------------------------------------------

    def apply(
        self, event_id: str, event: str, notice: Optional[Notice] = None, **details: Any
    ) -> Optional[str]:
        """Move ``event_id`` along ``event``; the new status (None: no record any more).

        ``notice`` is needed when the record begins; ``details`` are stored in the record.
        """
        with self._lock:
            record = self._records.get(event_id)
            before = record["status"] if record else None
            key = (status_key(before), event)
            if key not in TRANSITIONS:
                message = f"{event_id}: no transition from {before or 'no record'} on {event}"
                if self.strict:
                    raise IllegalTransition(message)
                LOG.error("bug: %s; the record is left as it was", message)
                return before
            after = TRANSITIONS[key]
            if after is None:
                self._records.pop(event_id, None)
            else:
                if record is None:
                    if notice is None:
                        raise ValueError(f"{event_id}: a new record needs its notice")
                    record = self._records[event_id] = {"hooks": {}}
                if notice is not None:
                    record["notice"] = notice.to_dict()
                record["status"] = after
                record.update(details)
            self.file.save(self._records)
            LOG.debug("%s: %s -> %s (%s)", event_id, before, after, event)
            return after

    def hook_started(self, event_id: str, phase: str, name: str, pgid: int) -> None:
        """Noted before a hook runs, so a restart can end what a crash left of it."""
        with self._lock:
            record = self._records.get(event_id)
            if record is not None:
                record["running"] = {"phase": phase, "hook": name, "pgid": pgid}
                self.file.save(self._records)

    def hook_result(
        self, event_id: str, phase: str, name: str, result: dict[str, Any], finished: bool
    ) -> None:
        """A step's result. Unfinished ones (never started, cut short by a cancel) run again."""
        with self._lock:
            record = self._records.get(event_id)
            if record is None:
                return
            record.pop("running", None)
            record["hooks"].setdefault(phase, {})[name] = {**result, "finished": finished}
            self.file.save(self._records)
