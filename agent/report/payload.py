"""What a webhook says: the JSON document of an event, and its one-line chat text.

Pure functions of a notice and its results; :mod:`agent.report.webhooks` sends them.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

from agent import __version__
from agent.clock import utc_rfc3339
from agent.clouds.base import IDENTITY_KEYS

if TYPE_CHECKING:  # pragma: no cover
    from agent.notice import Notice


def seconds_left(deadline: Optional[datetime], now: datetime) -> Optional[int]:
    if deadline is None:
        return None
    return max(0, math.floor((deadline - now).total_seconds()))


def hooks_table(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: result}`` with each result as HookResult.to_dict() minus the repeated name."""
    return {
        name: {k: v for k, v in result.items() if k != "hook"}
        for name, result in results.items()
        if isinstance(result, dict)
    }


def body(
    event: str,
    notice: Notice,
    deadline: Optional[datetime],
    now: datetime,
    hostname: str,
    outcome: Optional[str] = None,
    hooks: Optional[dict[str, Any]] = None,
    detail: str = "",
    identity: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """The JSON document of one event (the README lists its keys). ``identity`` gives
    ``region``, ``zone`` and ``instance_type`` when the cloud's metadata told them; a key it
    lacks is absent from the body, not null."""
    doc: dict[str, Any] = {
        "event": event,
        "provider": notice.provider,
        "kind": notice.kind,
        "action": notice.action,
        "instance_id": notice.instance_id,
        "event_id": notice.event_id,
        "deadline": utc_rfc3339(deadline) if deadline else None,
        "seconds_left": seconds_left(deadline, now),
        "time": utc_rfc3339(now),
        "hostname": hostname,
        "agent_version": __version__,
    }
    for key in IDENTITY_KEYS:
        value = (identity or {}).get(key)
        if value:
            doc[key] = value
    if event == "outcome":
        doc["outcome"] = outcome
        doc["hooks"] = hooks or {}
        if detail:
            doc["detail"] = detail
    return doc


def chat_text(doc: dict[str, Any]) -> str:
    """One line for a chat channel (``format = "slack"``)."""
    where = f"{doc['instance_id']} ({doc['hostname']}, {doc['provider']})"
    left = "" if doc["seconds_left"] is None else f", {doc['seconds_left']} s left"
    if doc["event"] == "notice":
        deadline = doc["deadline"] or "no deadline given"
        return f"{doc['kind']} ({doc['action']}) on {where}: draining, deadline {deadline}{left}"
    hooks = ", ".join(
        f"{name} {r.get('outcome')} ({float(r.get('duration') or 0):.1f} s)"
        for name, r in doc["hooks"].items()
    )
    detail = f": {doc['detail']}" if doc.get("detail") else ""
    return f"{doc['kind']} on {where}: {doc['outcome']}{detail}; hooks: {hooks or 'none'}"
