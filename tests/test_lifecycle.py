"""The lifecycle table: every allowed transition, illegal ones, and what reaches the file."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import pytest

from agent import lifecycle as lc
from agent.notice import SPOT_INTERRUPTION, Notice
from agent.state import FILE_NAME, StateFile

NOW = datetime(2026, 1, 5, 18, 0, tzinfo=timezone.utc)


def notice(event_id: str = "aws:i-1:spot-interruption") -> Notice:
    return Notice(
        provider="aws",
        kind=SPOT_INTERRUPTION,
        action="terminate",
        instance_id="i-1",
        event_id=event_id,
        deadline=NOW + timedelta(minutes=2),
        raw="{}",
        detected_at=NOW,
    )


def make(tmp_path: Path, strict: bool = True) -> lc.Lifecycle:
    life = lc.Lifecycle(StateFile(tmp_path, "boot-1"), strict=strict)
    life.load()
    return life


def on_disk(tmp_path: Path) -> dict:
    return json.loads((tmp_path / FILE_NAME).read_text())["notices"]


def bring_to(life: lc.Lifecycle, status: Optional[str]) -> str:
    """Walk a fresh record to ``status`` through legal transitions only."""
    n = notice()
    paths = {
        None: [],
        lc.DRAINING: [lc.START],
        lc.DRAINED: [lc.START, lc.DRAIN_DONE],
        lc.CONFIRMED: [lc.START, lc.DRAIN_DONE, lc.CONFIRM],
        lc.NOT_CONFIRMED: [lc.START, lc.DRAIN_DONE, lc.NOT_CONFIRM],
        lc.RESUMING: [lc.START, lc.DRAIN_DONE, lc.WITHDRAW],
        lc.WITHDRAWN: [lc.START, lc.DRAIN_DONE, lc.WITHDRAW, lc.RESUME_DONE],
    }
    for event in paths[status]:
        life.apply(n.event_id, event, n)
    assert life.status(n.event_id) == status
    return n.event_id


@pytest.mark.parametrize(
    ("before", "event", "after"),
    [(b, e, a) for (b, e), a in lc.TRANSITIONS.items() if b != lc.UNKNOWN],
    ids=str,
)
def test_every_row_of_the_table_moves_the_record_and_the_file(
    tmp_path: Path, before: Optional[str], event: str, after: Optional[str]
) -> None:
    life = make(tmp_path)
    event_id = bring_to(life, before)
    assert life.apply(event_id, event, notice()) == after
    assert life.status(event_id) == after
    if after is None:
        assert event_id not in on_disk(tmp_path)
    else:
        assert on_disk(tmp_path)[event_id]["status"] == after


def test_every_status_can_be_reached_and_left() -> None:
    reached = {a for a in lc.TRANSITIONS.values()}
    left = {b for b, _ in lc.TRANSITIONS}
    assert set(lc.STATUSES) <= reached
    assert set(lc.STATUSES) <= left


@pytest.mark.parametrize(
    ("before", "event"),
    [
        (None, lc.CONFIRM),
        (lc.DRAINING, lc.CONFIRM),
        (lc.CONFIRMED, lc.START),
        (lc.WITHDRAWN, lc.START),
        (lc.DRAINING, lc.FORGET),
        (lc.RESUMING, lc.START),
    ],
)
def test_an_illegal_transition_raises_in_tests(
    tmp_path: Path, before: Optional[str], event: str
) -> None:
    life = make(tmp_path)
    event_id = bring_to(life, before)
    with pytest.raises(lc.IllegalTransition, match=f"on {event}"):
        life.apply(event_id, event, notice())
    assert life.status(event_id) == before


def test_an_illegal_transition_is_logged_and_changes_nothing_in_production(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    life = make(tmp_path, strict=False)
    event_id = bring_to(life, lc.CONFIRMED)
    with caplog.at_level(logging.ERROR):
        assert life.apply(event_id, lc.START, notice()) == lc.CONFIRMED
    assert "no transition from confirmed on start" in caplog.text
    assert on_disk(tmp_path)[event_id]["status"] == lc.CONFIRMED


def test_details_are_kept_with_the_record(tmp_path: Path) -> None:
    life = make(tmp_path)
    event_id = bring_to(life, lc.DRAINED)
    life.apply(event_id, lc.CONFIRM, confirmation="marked-for-termination")
    assert on_disk(tmp_path)[event_id]["confirmation"] == "marked-for-termination"


def test_only_finished_hooks_count_as_finished(tmp_path: Path) -> None:
    life = make(tmp_path)
    event_id = bring_to(life, lc.DRAINING)
    life.hook_started(event_id, "drain", "10-a", 4242)
    assert on_disk(tmp_path)[event_id]["running"] == {
        "phase": "drain",
        "hook": "10-a",
        "pgid": 4242,
    }
    life.hook_result(event_id, "drain", "10-a", {"outcome": "ok"}, finished=True)
    life.hook_result(event_id, "drain", "20-b", {"outcome": "error"}, finished=False)
    assert life.finished_hooks(event_id, "drain") == {"10-a"}
    assert "running" not in on_disk(tmp_path)[event_id]


def test_a_newer_versions_status_and_fields_are_kept_and_drain_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = {
        "notice": notice().to_dict(),
        "status": "quarantined",
        "hooks": {},
        "future_field": [1, 2],
    }
    (tmp_path / FILE_NAME).write_text(
        json.dumps(
            {"version": 2, "boot_id": "boot-1", "notices": {"x": record}, "future_top": True}
        )
    )
    life = lc.Lifecycle(StateFile(tmp_path, "boot-1"), strict=True)
    with caplog.at_level(logging.WARNING):
        life.load()
    assert "unknown to this version: taken as unfinished" in caplog.text
    assert [n.event_id for n, _ in life.unfinished()] == [notice().event_id]
    assert life.apply("x", lc.START, notice()) == lc.DRAINING
    data = json.loads((tmp_path / FILE_NAME).read_text())
    assert data["future_top"] is True
    assert data["notices"]["x"]["future_field"] == [1, 2]


def test_a_damaged_record_is_set_aside(tmp_path: Path) -> None:
    bad = {"version": 1, "boot_id": "boot-1", "notices": {"x": {"status": "draining"}}}
    (tmp_path / FILE_NAME).write_text(json.dumps(bad))
    life = make(tmp_path)
    assert life.all() == {}
    assert (tmp_path / f"{FILE_NAME}.damaged").exists()
