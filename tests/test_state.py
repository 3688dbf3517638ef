"""The state file: atomic writes, one boot's records only, damage set aside, failures survived.

The records are written through :class:`agent.lifecycle.Lifecycle`, the only writer; the
``StateStore`` below drives it with the verbs these tests read best.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent import lifecycle as lc
from agent import notice as n
from agent import state
from agent.notice import Notice
from agent.state import FILE_NAME, StateFile

BOOT = "3c1f7e2a-0000-4000-8000-000000000001"
OTHER_BOOT = "3c1f7e2a-0000-4000-8000-000000000002"
UTC = timezone.utc


def make_notice(event: str = "spot", kind: str = n.SPOT_INTERRUPTION) -> Notice:
    return Notice(
        provider="aws",
        kind=kind,
        action="terminate",
        instance_id="i-0123456789abcdef0",
        event_id=f"aws:i-0123456789abcdef0:{event}",
        deadline=datetime(2017, 9, 18, 8, 22, tzinfo=UTC),
        raw='{"action": "terminate", "time": "2017-09-18T08:22:00Z"}',
        detected_at=datetime(2017, 9, 18, 8, 20, 1, tzinfo=UTC),
    )


class StateStore:
    def __init__(self, folder: Path, boot: str) -> None:
        self.life = lc.Lifecycle(StateFile(folder, boot), strict=True)

    @property
    def path(self) -> Path:
        return self.life.file.path

    @path.setter
    def path(self, value: Path) -> None:
        self.life.file.path = value

    def load(self) -> None:
        self.life.load()

    def start(self, notice: Notice) -> None:
        self.life.apply(notice.event_id, lc.START, notice)

    def hook_result(self, event_id: str, phase: str, hook: str, result: dict) -> None:
        self.life.hook_result(event_id, phase, hook, result, finished=True)

    def set_status(self, event_id: str, status: str, **details: object) -> None:
        assert status == lc.DRAINED
        self.life.apply(event_id, lc.DRAIN_DONE, **details)

    def forget(self, event_id: str) -> None:
        if self.life.status(event_id) is not None:
            if self.life.status(event_id) == lc.DRAINING:
                self.life.apply(event_id, lc.DRAIN_DONE)
            self.life.apply(event_id, lc.WITHDRAW)
            self.life.apply(event_id, lc.FORGET)

    def get(self, event_id: str) -> object:
        return self.life.get(event_id)

    def unfinished(self) -> list[Notice]:
        return [notice for notice, _ in self.life.unfinished()]

    def finished_hooks(self, event_id: str, phase: str) -> set[str]:
        return self.life.finished_hooks(event_id, phase)


def on_disk(folder: Path) -> dict:
    return json.loads((folder / FILE_NAME).read_text(encoding="utf-8"))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != FILE_NAME)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path, BOOT)


# -- writing ------------------------------------------------------------------------------------


def test_every_change_is_written_whole(store: StateStore, tmp_path: Path) -> None:
    first, second = make_notice("a"), make_notice("b")
    steps = [
        lambda: store.start(first),
        lambda: store.start(second),
        lambda: store.hook_result(first.event_id, "drain", "10-drain", {"outcome": "ok"}),
        lambda: store.set_status(first.event_id, lc.DRAINED, confirmed_at="x"),
        lambda: store.forget(second.event_id),
    ]
    for step in steps:
        step()
        data = on_disk(tmp_path)
        assert data["version"] == 1
        assert data["boot_id"] == BOOT
        assert isinstance(data["notices"], dict)
        assert leftovers(tmp_path) == []
    assert list(data["notices"]) == [first.event_id]
    record = data["notices"][first.event_id]
    assert record["status"] == "drained"
    assert record["confirmed_at"] == "x"
    assert record["notice"] == first.to_dict()
    assert record["hooks"] == {"drain": {"10-drain": {"outcome": "ok", "finished": True}}}


def test_state_dir_is_created(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "var" / "lib" / "preempt-agent", BOOT)
    store.start(make_notice())
    assert (tmp_path / "var" / "lib" / "preempt-agent" / FILE_NAME).is_file()


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    store: StateStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store.start(make_notice("a"))
    before = (tmp_path / FILE_NAME).read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with caplog.at_level(logging.ERROR, logger="agent.state"):
        store.start(make_notice("b"))
    assert (tmp_path / FILE_NAME).read_bytes() == before
    assert leftovers(tmp_path) == []
    assert "No space left on device" in caplog.text
    monkeypatch.undo()
    store.start(make_notice("c"))
    assert len(on_disk(tmp_path)["notices"]) == 3, "the records in memory were kept"


def test_write_failure_logs_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file\n", encoding="utf-8")
    store = StateStore(blocker / "state", BOOT)
    notice = make_notice()
    with caplog.at_level(logging.INFO, logger="agent.state"):
        store.start(notice)
        store.hook_result(notice.event_id, "drain", "10-a", {"outcome": "ok"})
        store.set_status(notice.event_id, lc.DRAINED)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"cannot write state file {blocker / 'state' / FILE_NAME}" in errors[0].getMessage()
    assert "the drain goes on" in errors[0].getMessage()
    # The records are still served from memory.
    assert store.finished_hooks(notice.event_id, "drain") == {"10-a"}
    assert store.get(notice.event_id)["status"] == "drained"  # type: ignore[index]

    caplog.clear()
    store.path = tmp_path / "good" / FILE_NAME
    with caplog.at_level(logging.INFO, logger="agent.state"):
        store.forget(notice.event_id)
        store.start(notice)
    assert caplog.messages == [f"state file {store.path} written again"]
    assert on_disk(tmp_path / "good")["notices"][notice.event_id]["status"] == "draining"


# -- reading ------------------------------------------------------------------------------------


def test_missing_file_is_empty_state(store: StateStore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="agent.state"):
        store.load()
    assert store.unfinished() == []
    assert caplog.records == []


def test_unfinished_returns_draining_notices(tmp_path: Path) -> None:
    first = StateStore(tmp_path, BOOT)
    a, b, c = make_notice("a"), make_notice("b"), make_notice("c", n.ASG_TERMINATION)
    for notice in (a, b, c):
        first.start(notice)
    first.set_status(b.event_id, lc.DRAINED)
    assert first.unfinished() == [a, c]

    again = StateStore(tmp_path, BOOT)
    again.load()
    assert again.unfinished() == [a, c]
    assert again.get(b.event_id)["status"] == "drained"  # type: ignore[index]


def test_another_boots_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = StateStore(tmp_path, OTHER_BOOT)
    old.start(make_notice())
    store = StateStore(tmp_path, BOOT)
    with caplog.at_level(logging.INFO, logger="agent.state"):
        store.load()
    assert store.unfinished() == []
    assert store.get(make_notice().event_id) is None
    assert "is from an earlier boot; ignoring it" in caplog.text
    store.start(make_notice("new"))
    data = on_disk(tmp_path)
    assert data["boot_id"] == BOOT
    assert list(data["notices"]) == [make_notice("new").event_id]


@pytest.mark.parametrize(
    "content",
    [
        '{"version": 1, "boot_id": "',
        "",
        "[]",
        '{"version": 1}',
        '{"boot_id": "B", "notices": []}',
        '{"boot_id": "B", "notices": {"x": {"status": "draining", "hooks": {}}}}',
        '{"boot_id": "B", "notices": {"x": {"notice": {"kind": "spot-interruption"}}}}',
    ],
    ids=[
        "truncated",
        "empty",
        "list",
        "no-notices",
        "notices-list",
        "no-notice",
        "partial-notice",
    ],
)
def test_damaged_file_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / FILE_NAME
    path.write_text(content.replace('"B"', f'"{BOOT}"'), encoding="utf-8")
    store = StateStore(tmp_path, BOOT)
    with caplog.at_level(logging.ERROR, logger="agent.state"):
        store.load()
    aside = tmp_path / f"{FILE_NAME}.damaged"
    assert not path.exists()
    assert aside.read_text(encoding="utf-8") == content.replace('"B"', f'"{BOOT}"')
    (error,) = caplog.records
    assert error.levelno == logging.ERROR
    assert f"state file {path} is damaged" in error.getMessage()
    assert f"moved to {aside}, starting fresh" in error.getMessage()
    assert store.unfinished() == []
    store.start(make_notice())
    assert list(on_disk(tmp_path)["notices"]) == [make_notice().event_id]


@pytest.mark.parametrize(
    "record",
    [
        {"hooks": {}},
        {"status": "draining"},
        {"status": 7, "hooks": {}},
        {"status": "draining", "hooks": []},
        {"status": "draining", "hooks": {"drain": ["10-a"]}},
    ],
    ids=["no-status", "no-hooks", "status-not-text", "hooks-not-a-table", "phase-not-a-table"],
)
def test_damaged_record_is_set_aside_not_a_crash_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, record: dict
) -> None:
    notice = make_notice()
    record = {"notice": notice.to_dict(), **record}
    data = {"version": 1, "boot_id": BOOT, "notices": {notice.event_id: record}}
    (tmp_path / FILE_NAME).write_text(json.dumps(data), encoding="utf-8")
    store = StateStore(tmp_path, BOOT)
    with caplog.at_level(logging.ERROR, logger="agent.state"):
        store.load()
    assert "is damaged" in caplog.text
    assert (tmp_path / f"{FILE_NAME}.damaged").exists()
    assert store.unfinished() == []
    store.start(notice)
    store.hook_result(notice.event_id, "drain", "10-a", {"outcome": "ok"})
    assert store.unfinished() == [notice]


def test_unreadable_file_is_logged_not_moved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE_NAME).mkdir()
    store = StateStore(tmp_path, BOOT)
    with caplog.at_level(logging.ERROR, logger="agent.state"):
        store.load()
    assert f"cannot read state file {tmp_path / FILE_NAME}" in caplog.text
    assert (tmp_path / FILE_NAME).is_dir()
    assert store.unfinished() == []


# -- records ------------------------------------------------------------------------------------


def test_hook_results_are_kept_per_phase(tmp_path: Path) -> None:
    store = StateStore(tmp_path, BOOT)
    notice = make_notice()
    store.start(notice)
    store.hook_result(notice.event_id, "drain", "10-a", {"outcome": "ok"})
    store.hook_result(notice.event_id, "drain", "20-b", {"outcome": "failed", "exit_code": 3})
    store.hook_result(notice.event_id, "resume", "10-a", {"outcome": "ok"})
    assert store.finished_hooks(notice.event_id, "drain") == {"10-a", "20-b"}
    assert store.finished_hooks(notice.event_id, "resume") == {"10-a"}
    assert store.finished_hooks("aws:unknown", "drain") == set()

    again = StateStore(tmp_path, BOOT)
    again.load()
    assert again.finished_hooks(notice.event_id, "drain") == {"10-a", "20-b"}
    hooks = again.get(notice.event_id)["hooks"]  # type: ignore[index]
    assert hooks["drain"]["20-b"] == {"outcome": "failed", "exit_code": 3, "finished": True}
    # A restarted drain keeps what already ran.
    again.start(notice)
    assert again.finished_hooks(notice.event_id, "drain") == {"10-a", "20-b"}
    assert again.unfinished() == [notice]


def test_get_returns_a_copy(store: StateStore) -> None:
    notice = make_notice()
    store.start(notice)
    record = store.get(notice.event_id)
    assert record is not None
    record["status"] = "mangled"
    record["hooks"]["drain"] = {"x": {}}
    assert store.get(notice.event_id)["status"] == "draining"  # type: ignore[index]
    assert store.finished_hooks(notice.event_id, "drain") == set()


def test_forget_drops_the_record_for_good(tmp_path: Path) -> None:
    store = StateStore(tmp_path, BOOT)
    notice = make_notice()
    store.start(notice)
    store.hook_result(notice.event_id, "drain", "10-a", {"outcome": "ok"})
    store.forget(notice.event_id)
    store.forget("aws:never-seen")
    store.hook_result(notice.event_id, "drain", "10-a", {"outcome": "ok"})  # too late: ignored
    assert store.get(notice.event_id) is None
    assert store.unfinished() == []
    assert on_disk(tmp_path)["notices"] == {}
    again = StateStore(tmp_path, BOOT)
    again.load()
    assert again.get(notice.event_id) is None
    store.start(notice)
    assert store.finished_hooks(notice.event_id, "drain") == set()


# -- boot id ------------------------------------------------------------------------------------


def test_read_boot_id(tmp_path: Path) -> None:
    path = tmp_path / "boot_id"
    path.write_text(BOOT + "\n", encoding="ascii")
    assert state.read_boot_id(path) == BOOT


def test_unreadable_boot_id(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.state"):
        value = state.read_boot_id(tmp_path / "absent")
    assert value == f"unknown-{os.getpid()}"
    assert "cannot read the boot id" in caplog.text


def test_the_real_boot_id_is_stable() -> None:
    if not state.BOOT_ID_PATH.exists():
        pytest.skip("no /proc boot id here")
    assert state.read_boot_id() == state.read_boot_id()
    assert not state.read_boot_id().startswith("unknown-")
