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

_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROLS.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_controls(text: str) -> str:
    """``text`` with every control character written out (``\\n``, ``\\x00``, ``\\x1b``):
    a value from a metadata answer or a hook's output can then neither forge a log line,
    nor cut one short, nor drive the operator's terminal."""
    return text.translate(_CONTROLS)


class TextFormatter(logging.Formatter):
    """One record, one line: the message's control characters are escaped. A traceback
    follows on lines indented by two spaces, which no record's line begins with."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%dT%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        lines = super().formatException(ei).splitlines()
        return "\n".join("  " + escape_controls(line) for line in lines)

    def formatStack(self, stack_info: str) -> str:
        return "\n".join("  " + escape_controls(line) for line in stack_info.splitlines())


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
            handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("urllib3", "botocore", "boto3", "aliyunsdkcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return fmt
