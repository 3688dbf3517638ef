"""hooks.d: naming rules, the preempt-agent header, and refusing files that are not safe."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agent import notice as n
from agent.hooks import DRAIN, RESUME, Hook, Refused
from agent.hooks.scripts import HeaderError, discover, name_problem, parse_header, passed_over

SCRIPT = "#!/bin/sh\nexit 0\n"
KNOWN = f" (known: {', '.join(n.KINDS)}, all)"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "hooks.d"
    path.mkdir()
    path.chmod(0o755)
    return path


def hook_file(folder: Path, name: str, body: str = SCRIPT, mode: int = 0o755) -> Path:
    path = folder / name
    path.write_text(body, encoding="utf-8")
    path.chmod(mode)
    return path


def names(hooks: list[Hook]) -> list[str]:
    return [h.name for h in hooks]


def refusals(refused: list[Refused]) -> dict[str, str]:
    return {r.name: r.reason for r in refused}


# -- naming rules -------------------------------------------------------------------------------


def test_hooks_run_in_lexical_order(folder: Path) -> None:
    for name in ["50-last", "10-first", "20_second", "Z-upper", "a-lower", "00-zero", "9-nine"]:
        hook_file(folder, name)
    hooks, refused = discover(folder)
    assert names(hooks) == [
        "00-zero",
        "10-first",
        "20_second",
        "50-last",
        "9-nine",
        "Z-upper",
        "a-lower",
    ]
    assert refused == []
    first = hooks[1]
    assert first.argv == (str(folder / "10-first"),)
    assert first.origin == str(folder / "10-first")


def test_non_executable_files_are_skipped(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    hook_file(folder, "10-run")
    hook_file(folder, "20-readme", mode=0o644)
    hook_file(folder, "30-group-exec-only", mode=0o654)
    with caplog.at_level(logging.INFO, logger="agent.hooks.scripts"):
        hooks, refused = discover(folder)
    assert names(hooks) == ["10-run"]
    assert refused == []
    assert f"skipping hook {folder / '20-readme'}: not executable" in caplog.messages


@pytest.mark.parametrize(
    "name",
    [
        "10-drain.dpkg-old",
        "10-drain.dpkg-dist",
        "10-drain.dpkg-new",
        "10-drain.rpmnew",
        "10-drain.rpmsave",
        "10-drain.rpmorig",
        "10-drain.ucf-dist",
        "10-drain~",
        "10-drain.bak",
        "10-drain.orig",
        "10-drain.swp",
        "10-drain.tmp",
        "10-drain.disabled",
        ".10-drain",
        ".hidden",
        "-10-drain",
        "10 drain",
        "10-drain#",
    ],
)
def test_leftovers_backups_and_odd_names_are_skipped(
    folder: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    hook_file(folder, name)
    hook_file(folder, "10-drain")
    with caplog.at_level(logging.WARNING, logger="agent.hooks.scripts"):
        hooks, refused = discover(folder)
    assert names(hooks) == ["10-drain"]
    assert refused == []
    assert [r.levelno for r in caplog.records] == [logging.WARNING], "seen, not a DEBUG line"
    (skipped,) = passed_over(folder)
    assert skipped.name == name
    assert skipped.reason.startswith("never runs: ")


def test_why_a_name_is_passed_over() -> None:
    assert name_problem("10-drain.sh") == ""
    assert name_problem(".keep") == "hidden file"
    assert name_problem("10-drain.dpkg-old") == "a backup or package-manager leftover"
    assert (
        name_problem("10 drain") == "not a hook name: use [A-Za-z0-9_.-], not starting with - or ."
    )


def test_dotted_names_are_hooks(folder: Path) -> None:
    hook_file(folder, "10-drain.sh")
    hook_file(folder, "20-flush.py")
    assert names(discover(folder)[0]) == ["10-drain.sh", "20-flush.py"]


def test_directories_are_ignored(folder: Path) -> None:
    (folder / "10-subdir").mkdir(mode=0o755)
    hook_file(folder / "10-subdir", "inner")
    hook_file(folder, "20-real")
    hooks, refused = discover(folder)
    assert names(hooks) == ["20-real"]
    assert refused == []


def test_special_files_and_broken_links_are_refused(folder: Path) -> None:
    os.mkfifo(folder / "10-fifo", 0o755)
    (folder / "20-dangling").symlink_to(folder / "absent")
    hook_file(folder, "30-real")
    hooks, refused = discover(folder)
    assert names(hooks) == ["30-real"]
    reasons = refusals(refused)
    assert reasons["10-fifo"] == "not a regular file"
    assert reasons["20-dangling"].startswith("cannot stat: ")


def test_a_link_to_a_safe_script_is_a_hook(folder: Path, tmp_path: Path) -> None:
    target = hook_file(tmp_path, "shared-drain")
    (folder / "10-drain").symlink_to(target)
    (hook,) = discover(folder)[0]
    assert hook.name == "10-drain"


def test_missing_folder_means_no_hooks_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.hooks.scripts"):
        hooks, refused = discover(tmp_path / "absent")
    assert (hooks, refused) == ([], [])
    assert f"hooks folder {tmp_path / 'absent'} does not exist" in caplog.text


def test_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = hook_file(tmp_path, "hooks.d")
    hooks, refused = discover(path)
    assert hooks == []
    (refusal,) = refused
    assert refusal.name == str(path)
    assert refusal.reason.startswith("cannot read the hooks folder: [Errno 20] Not a directory")


def test_empty_folder(folder: Path) -> None:
    assert discover(folder) == ([], [])


# -- the header ---------------------------------------------------------------------------------


def test_no_header_means_the_terminations_only(folder: Path) -> None:
    hook_file(folder, "10-drain")
    (hook,) = discover(folder)[0]
    assert hook.kinds == {n.SPOT_INTERRUPTION, n.ASG_TERMINATION}
    assert hook.timeout is None
    assert hook.resume is False
    assert hook.handles(n.SPOT_INTERRUPTION, DRAIN)
    assert not hook.handles(n.REBALANCE_RECOMMENDATION, DRAIN)
    assert not hook.handles(n.SPOT_INTERRUPTION, RESUME)


def test_header_kinds_timeout_and_resume(folder: Path) -> None:
    body = (
        "#!/bin/sh\n"
        "# Cordon on a rebalance, uncordon if it came to nothing.\n"
        "# preempt-agent: kinds=rebalance-recommendation,spot-interruption"
        " timeout=12.5 resume=yes\n"
        "exit 0\n"
    )
    hook_file(folder, "10-cordon", body)
    (hook,) = discover(folder)[0]
    assert hook.kinds == {n.REBALANCE_RECOMMENDATION, n.SPOT_INTERRUPTION}
    assert hook.timeout == 12.5
    assert hook.resume is True
    assert hook.handles(n.REBALANCE_RECOMMENDATION, RESUME)
    assert not hook.handles(n.ASG_TERMINATION, DRAIN)


def test_header_kinds_all(folder: Path) -> None:
    hook_file(folder, "10-log", "#!/bin/sh\n# preempt-agent: kinds=all resume=no\n")
    (hook,) = discover(folder)[0]
    assert hook.kinds == set(n.KINDS)
    assert hook.resume is False
    for kind in n.KINDS:
        assert hook.handles(kind, DRAIN)


@pytest.mark.parametrize(
    "line",
    [
        "# preempt-agent: timeout=5",
        "#preempt-agent:timeout=5",
        "   #   preempt-agent:   timeout=5",
        "// preempt-agent: timeout=5",
        "-- preempt-agent: timeout=5",
    ],
)
def test_header_comment_styles(line: str) -> None:
    assert parse_header(f"#!/usr/bin/env x\n{line}\n") == {"timeout": 5.0}


def test_header_must_be_near_the_top() -> None:
    late = "#!/bin/sh\n" + "true\n" * 29 + "# preempt-agent: timeout=5\n"
    assert parse_header(late) == {}
    early = "#!/bin/sh\n" + "true\n" * 28 + "# preempt-agent: timeout=5\n"
    assert parse_header(early) == {"timeout": 5.0}


def test_only_the_first_header_line_counts() -> None:
    text = "# preempt-agent: timeout=5\n# preempt-agent: timeout=9 resume=yes\n"
    assert parse_header(text) == {"timeout": 5.0}


def test_text_that_only_mentions_the_agent_is_not_a_header() -> None:
    assert parse_header('echo "preempt-agent: kinds=bogus"\n# see preempt-agent docs\n') == {}


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("kinds=preempted", "unknown kinds ['preempted']" + KNOWN),
        ("kinds=spot-interruption,Spot", "unknown kinds ['Spot']" + KNOWN),
        ("timeout=soon", "timeout='soon' is not a number"),
        ("timeout=0", "timeout must be greater than 0"),
        ("timeout=-3", "timeout must be greater than 0"),
        ("resume=maybe", "resume='maybe': use yes or no"),
        ("retries=3", "unknown header key 'retries' (known: kinds, timeout, resume)"),
        ("timeout", "header item 'timeout' is not key=value"),
    ],
)
def test_bad_headers_refuse_the_hook_with_a_reason(folder: Path, header: str, reason: str) -> None:
    hook_file(folder, "10-bad", f"#!/bin/sh\n# preempt-agent: {header}\n")
    hook_file(folder, "20-good")
    hooks, refused = discover(folder)
    assert names(hooks) == ["20-good"]
    assert refusals(refused) == {"10-bad": f"bad preempt-agent header: {reason}"}


def test_parse_header_raises_header_error() -> None:
    with pytest.raises(HeaderError, match="unknown kinds"):
        parse_header("# preempt-agent: kinds=none")


# -- safety -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "shown"), [(0o775, "-rwxrwxr-x"), (0o757, "-rwxr-xrwx"), (0o777, "-rwxrwxrwx")]
)
def test_group_or_other_writable_files_are_refused(folder: Path, mode: int, shown: str) -> None:
    hook_file(folder, "10-writable", mode=mode)
    hook_file(folder, "20-safe")
    hooks, refused = discover(folder)
    assert names(hooks) == ["20-safe"]
    assert refusals(refused) == {"10-writable": f"writable by group or others (mode {shown})"}


@needs_root
def test_a_file_owned_by_another_user_is_refused_as_root(folder: Path) -> None:
    path = hook_file(folder, "10-nobody")
    os.chown(path, 65534, 65534)
    hook_file(folder, "20-root")
    hooks, refused = discover(folder)
    assert names(hooks) == ["20-root"]
    assert refusals(refused) == {"10-nobody": "owned by uid 65534, not root"}


@needs_root
def test_a_non_root_agent_trusts_root_and_itself_only(folder: Path) -> None:
    hook_file(folder, "10-root")
    os.chown(hook_file(folder, "20-mine"), 1000, 1000)
    os.chown(hook_file(folder, "30-someone"), 1001, 1001)
    hooks, refused = discover(folder, euid=1000)
    assert names(hooks) == ["10-root", "20-mine"]
    assert refusals(refused) == {"30-someone": "owned by uid 1001, neither root nor this user"}


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775])
def test_an_unsafe_folder_refuses_every_hook(folder: Path, mode: int) -> None:
    hook_file(folder, "10-a")
    hook_file(folder, "20-b")
    folder.chmod(mode)
    hooks, refused = discover(folder)
    assert hooks == []
    (refusal,) = refused
    assert refusal.name == str(folder)
    assert refusal.reason.startswith("hooks folder is writable by group or others (mode d")
    assert refusal.reason.endswith("; no hook in it will run")


@needs_root
def test_a_folder_owned_by_another_user_refuses_every_hook(folder: Path) -> None:
    hook_file(folder, "10-a")
    os.chown(folder, 65534, 65534)
    hooks, refused = discover(folder)
    assert hooks == []
    assert refused == [
        Refused(str(folder), "hooks folder is owned by uid 65534, not root; no hook in it will run")
    ]


# -- nothing above a hook may let someone else swap it ------------------------------------------


def test_a_symlinked_hook_in_a_folder_others_can_write_is_refused(
    folder: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    target = hook_file(shared, "drain-target")
    shared.chmod(0o777)  # anyone could replace drain-target between check and run
    (folder / "10-linked").symlink_to(target)
    found, refused = discover(folder)
    assert names(found) == []
    assert refusals(refused)["10-linked"] == f"{shared} is writable by group or others (drwxrwxrwx)"


def test_a_symlinked_hook_under_a_sticky_folder_is_accepted(folder: Path, tmp_path: Path) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    target = hook_file(sticky, "drain-target")
    sticky.chmod(0o1777)  # like /tmp: others cannot rename or remove this file
    (folder / "10-linked").symlink_to(target)
    found, refused = discover(folder)
    assert names(found) == ["10-linked"]
    assert refused == []


def test_a_hooks_folder_below_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    open_parent = tmp_path / "open"
    below = open_parent / "hooks.d"
    below.mkdir(parents=True)
    below.chmod(0o755)
    hook_file(below, "10-drain")
    open_parent.chmod(0o777)  # anyone could rename hooks.d away and put their own in place
    found, refused = discover(below)
    assert found == []
    assert refusals(refused)[str(below)].startswith(f"{open_parent} is writable by group")


def test_a_relative_hooks_folder_gives_absolute_commands(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hooks run from "/", so a command relative to the agent's folder would not be found."""
    hook_file(folder, "10-drain")
    monkeypatch.chdir(folder.parent)
    found, _ = discover(Path(folder.name))
    assert found[0].argv == (str(folder / "10-drain"),)
