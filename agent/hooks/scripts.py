"""Executable hooks in a hooks.d folder, in lexical order, refused when unsafe.

The naming rules are close to run-parts' but not the same: dots are allowed (``10-drain.sh``
runs), while hidden files, backups and package-manager leftovers (``.dpkg-old``, ``.rpmnew``,
``~``, ...) are passed over; :func:`name_problem` says which and why.

A hook declares what it handles in a comment header within its first lines::

    # preempt-agent: kinds=spot-interruption,rebalance-recommendation timeout=30 resume=yes

``kinds`` (default: the terminations, spot-interruption and asg-termination; ``all`` for
every kind; read by :func:`agent.hooks.parse_kinds`), ``timeout`` (seconds, capped by what
is left of the notice window) and ``resume`` (``yes`` to be called again with ``resume``
when a notice is withdrawn).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path
from typing import Union

from agent.hooks import Hook, Refused, parse_kinds
from agent.notice import TERMINAL_KINDS

LOG = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
LEFTOVER_RE = re.compile(
    r"(\.dpkg-[a-z]+|\.rpm(new|save|orig)|\.ucf-[a-z]+|\.bak|\.orig|\.swp|\.tmp|\.disabled|~)$"
)
HEADER_RE = re.compile(r"^\s*(?:#|//|--)\s*preempt-agent:\s*(?P<body>.*)$")
HEADER_SCAN_BYTES = 4096


class HeaderError(ValueError):
    pass


def parse_header(text: str) -> dict[str, object]:
    """Options from the ``preempt-agent:`` comment line, or {} when there is none."""
    for line in text.splitlines()[:30]:
        match = HEADER_RE.match(line)
        if not match:
            continue
        options: dict[str, object] = {}
        for item in match.group("body").split():
            key, sep, value = item.partition("=")
            if not sep:
                raise HeaderError(f"header item {item!r} is not key=value")
            if key == "kinds":
                try:
                    options["kinds"] = parse_kinds(value)
                except ValueError as exc:
                    raise HeaderError(str(exc)) from None
            elif key == "timeout":
                try:
                    options["timeout"] = float(value)
                except ValueError:
                    raise HeaderError(f"timeout={value!r} is not a number") from None
                if options["timeout"] <= 0:  # type: ignore[operator]
                    raise HeaderError("timeout must be greater than 0")
            elif key == "resume":
                if value not in ("yes", "no"):
                    raise HeaderError(f"resume={value!r}: use yes or no")
                options["resume"] = value == "yes"
            else:
                raise HeaderError(f"unknown header key {key!r} (known: kinds, timeout, resume)")
        return options
    return {}


def unsafe_reason(st: os.stat_result, euid: int) -> str:
    """Why a file or folder with this stat must not be trusted, or '' if it may be."""
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.filemode(st.st_mode)})"
    if euid == 0 and st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    if euid != 0 and st.st_uid not in (0, euid):
        return f"owned by uid {st.st_uid}, neither root nor this user"
    return ""


def unsafe_ancestor(path: Path, euid: int) -> str:
    """Why a folder above ``path`` (after symlinks) would let someone else swap what runs.

    A folder others can write to could replace a hook between the check and its run, unless
    it is sticky (like /tmp): there only the owner may rename or delete its entries.
    """
    for folder in Path(os.path.realpath(path)).parents:
        try:
            st = folder.stat()
        except OSError as exc:
            return f"cannot check {folder}: {exc}"
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and not st.st_mode & stat.S_ISVTX:
            return f"{folder} is writable by group or others ({stat.filemode(st.st_mode)})"
        if st.st_uid not in (0, euid):
            return f"{folder} is owned by uid {st.st_uid}"
    return ""


def discover(folder: Path, euid: int = -1) -> tuple[list[Hook], list[Refused]]:
    """Hooks in ``folder`` in lexical order, and the files refused with their reasons."""
    euid = os.geteuid() if euid == -1 else euid
    # Absolute, so hooks run from "/" still find their files when the config says hooks.d.
    folder = folder.absolute()
    try:
        folder_stat = folder.stat()
    except FileNotFoundError:
        LOG.warning("hooks folder %s does not exist; no hook scripts will run", folder)
        return [], []
    except OSError as exc:
        return [], [Refused(str(folder), f"cannot read the hooks folder: {exc}")]
    problem = unsafe_reason(folder_stat, euid)
    if problem:
        return [], [Refused(str(folder), f"hooks folder is {problem}; no hook in it will run")]
    problem = unsafe_ancestor(folder / ".", euid)
    if problem:
        return [], [Refused(str(folder), f"{problem}; no hook in the folder below it will run")]
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:  # not a folder, or unreadable
        return [], [Refused(str(folder), f"cannot read the hooks folder: {exc}")]
    hooks: list[Hook] = []
    refused: list[Refused] = []
    for path in entries:
        result = _load(path, euid)
        if isinstance(result, Hook):
            hooks.append(result)
        elif result is not None:
            refused.append(result)
    return hooks, refused


def name_problem(name: str) -> str:
    """Why a file with this name is passed over, or '' when the name may be a hook's."""
    if name.startswith("."):
        return "hidden file"
    if LEFTOVER_RE.search(name):
        return "a backup or package-manager leftover"
    if not NAME_RE.match(name):
        return "not a hook name: use [A-Za-z0-9_.-], not starting with - or ."
    return ""


def passed_over(folder: Path) -> list[Refused]:
    """Files in ``folder`` that never run because of their names, and why (for ``check``)."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    found = []
    for path in entries:
        problem = name_problem(path.name)
        if problem and not path.is_dir():
            found.append(Refused(path.name, f"never runs: {problem}"))
    return found


def _load(path: Path, euid: int) -> Union[Hook, Refused, None]:
    name = path.name
    problem = name_problem(name)
    if problem:
        if not path.is_dir():
            LOG.warning("skipping %s: not a hook name (%s)", path, problem)
        return None
    try:
        st = path.stat()
    except OSError as exc:
        return Refused(name, f"cannot stat: {exc}")
    if not stat.S_ISREG(st.st_mode):
        return None if stat.S_ISDIR(st.st_mode) else Refused(name, "not a regular file")
    if not st.st_mode & stat.S_IXUSR:
        LOG.info("skipping hook %s: not executable", path)
        return None
    problem = unsafe_reason(st, euid)
    if not problem and path.is_symlink():
        problem = unsafe_ancestor(path, euid)
    if problem:
        return Refused(name, problem)
    try:
        with path.open("rb") as handle:
            head = handle.read(HEADER_SCAN_BYTES).decode("utf-8", "replace")
        options = parse_header(head)
    except OSError as exc:
        return Refused(name, f"cannot read: {exc}")
    except HeaderError as exc:
        return Refused(name, f"bad preempt-agent header: {exc}")
    return Hook(
        name=name,
        argv=(str(path),),
        origin=str(path),
        kinds=options.get("kinds", TERMINAL_KINDS),  # type: ignore[arg-type]
        resume=bool(options.get("resume", False)),
        timeout=options.get("timeout"),  # type: ignore[arg-type]
    )
