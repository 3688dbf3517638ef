"""Log output as an operator reads it: JSON lines with the structured fields, or plain text."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator

import pytest

from agent import logs
from agent.logs import JsonFormatter, fields

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR)\s+\S")


@pytest.fixture
def clean_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """Let logs.setup() replace the root handlers, and put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("urllib3", "botocore")}
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)


def emit_drain_lines(log: logging.Logger) -> None:
    extra = fields(HOOK="10-drain-k8s", NOTICE_ID="aws:i-1:spot-interruption", PHASE="drain")
    log.info("[%s] %s", "10-drain-k8s", "cordoned node", extra=extra)
    log.warning(
        "hook %s: %s after %.1f s",
        "10-drain-k8s",
        "timeout",
        30.0,
        extra={**extra, "OUTCOME": "timeout"},
    )
    log.info("no structured fields here")


def test_json_lines_carry_the_structured_fields(
    clean_root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logs.setup("json", "info") == "json"
    emit_drain_lines(logging.getLogger("agent.hooks.runner"))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["message"] == "[10-drain-k8s] cordoned node"
    assert first["hook"] == "10-drain-k8s"
    assert first["notice_id"] == "aws:i-1:spot-interruption"
    assert first["phase"] == "drain"
    assert "outcome" not in first
    assert first["level"] == "info"
    assert first["logger"] == "agent.hooks.runner"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", first["time"])
    assert second["outcome"] == "timeout"
    assert second["level"] == "warning"
    assert second["message"] == "hook 10-drain-k8s: timeout after 30.0 s"
    assert set(third) == {"time", "level", "logger", "message"}


def test_json_keeps_one_line_for_newlines_and_tracebacks() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        info = sys.exc_info()
    record = logging.LogRecord("test.logs", logging.ERROR, __file__, 1, "two\nlines", (), info)
    text = JsonFormatter().format(record)
    assert "\n" not in text
    entry = json.loads(text)
    assert entry["message"] == "two\nlines"
    assert "RuntimeError: boom" in entry["exception"]


def test_json_fields_that_are_not_json_types_are_written_as_text() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.HOOK = object()
    assert json.loads(JsonFormatter().format(record))["hook"].startswith("<object object")


def test_text_is_one_line_per_record(
    clean_root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logs.setup("text", "info") == "text"
    emit_drain_lines(logging.getLogger("agent.hooks.runner"))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert TEXT_LINE.match(line), line
    assert lines[0].endswith(" INFO    [10-drain-k8s] cordoned node")
    assert lines[1].endswith(" WARNING hook 10-drain-k8s: timeout after 30.0 s")


def test_level_filters(clean_root: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup("text", "warning")
    log = logging.getLogger("agent.daemon")
    log.info("quiet")
    log.warning("loud")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING loud")


def test_setup_replaces_handlers_and_quietens_libraries(clean_root: logging.Logger) -> None:
    logs.setup("text", "debug")
    logs.setup("json", "debug")
    assert len(clean_root.handlers) == 1
    assert isinstance(clean_root.handlers[0].formatter, JsonFormatter)
    assert clean_root.level == logging.DEBUG
    assert logging.getLogger("urllib3").level == logging.WARNING


def test_auto_is_text_away_from_the_journal(
    clean_root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logs.setup("auto", "info") == "text"
    logging.getLogger("agent").info("plain")
    assert TEXT_LINE.match(capsys.readouterr().err)


def test_auto_is_the_journal_when_stderr_is_the_journal_stream(
    clean_root: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("systemd.journal", reason="systemd-python is not installed")
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logs.setup("auto", "info") == "journal"
    assert type(clean_root.handlers[0]).__name__ == "JournalHandler"


def test_journal_without_systemd_python_falls_back_to_text(
    clean_root: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "_journal_handler", lambda: None)
    assert logs.setup("journal", "info") == "text"
    assert isinstance(clean_root.handlers[0], logging.StreamHandler)


def test_fields_drops_missing_values() -> None:
    assert fields(HOOK="a", OUTCOME=None, NOTICE_ID="n") == {"HOOK": "a", "NOTICE_ID": "n"}


@pytest.mark.parametrize(
    "hostile",
    [
        "terminate\n2030-01-01T00:00:00 INFO    forged line",
        "terminate\r2030-01-01T00:00:00 INFO    forged",
        "nul\x00byte",
        "esc\x1b[2Jcleared",
        "sep\u2028line\x85next",
    ],
)
def test_text_lines_cannot_be_forged_by_a_value(
    clean_root: logging.Logger, capsys: pytest.CaptureFixture[str], hostile: str
) -> None:
    logs.setup("text", "info")
    logging.getLogger("agent").warning("action %r / %s", hostile, hostile)
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and out.endswith("\n")
    line = out[:-1]
    assert line.isprintable(), line
    assert TEXT_LINE.match(line)


def test_text_tracebacks_are_indented_so_no_line_looks_like_a_record(
    clean_root: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("text", "info")
    try:
        raise ValueError("bad\n2030-01-01T00:00:00 INFO    forged")
    except ValueError:
        logging.getLogger("agent").exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert TEXT_LINE.match(lines[0])
    assert all(line.startswith("  ") for line in lines[1:])
    assert not any(TEXT_LINE.match(line) for line in lines[1:])


def test_escape_controls_writes_control_characters_out() -> None:
    assert logs.escape_controls("a\nb\x00c\td\x1b") == "a\\nb\\x00c\\td\\x1b"
    assert logs.escape_controls("plain é ✓") == "plain é ✓"


def test_json_escapes_control_characters_too() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a\x00b\nc\x1b", (), None)
    text = JsonFormatter().format(record)
    assert text.isprintable() and json.loads(text)["message"] == "a\x00b\nc\x1b"
