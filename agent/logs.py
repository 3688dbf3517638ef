"""Logging set-up: readable text on stderr, JSON lines for machines, or the journal.

Structured context (notice id, provider, kind, hook, outcome) travels as ``extra`` fields
with upper-case names, which the journal stores as fields and the JSON format as keys.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any, Optional

from agent.systemd import under_journal

FORMATS = ("auto", "text", "json", "journal")
FIELDS = ("NOTICE_ID", "PROVIDER", "KIND", "HOOK", "OUTCOME", "PHASE")


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: ``LOG.info(..., extra=fields(HOOK=name))``."""
    return {k: v for k, v in values.items() if v is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if hasattr(record, name):
                entry[name.lower()] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _journal_handler() -> Optional[logging.Handler]:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER="preempt-agent")


def setup(fmt: str = "auto", level: str = "info") -> str:
    """Install one root handler; return the format actually used."""
    handler: Optional[logging.Handler] = None
    if fmt in ("auto", "journal") and (fmt == "journal" or under_journal()):
        handler = _journal_handler()
        if handler is not None:
            fmt = "journal"
    if handler is None:
        fmt = "json" if fmt == "json" else "text"
        handler = logging.StreamHandler(sys.stderr)
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")
            )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("urllib3", "botocore", "boto3", "aliyunsdkcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return fmt
