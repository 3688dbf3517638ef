"""Which cloud this is, from DMI files first and, only if they say nothing, a brief probe."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    cloud: Optional[str]
    evidence: str


def read_dmi(sysfs_root: Path, name: str) -> str:
    try:
        return (sysfs_root / "class" / "dmi" / "id" / name).read_text(errors="replace").strip()
    except OSError:
        return ""


def detect(sysfs_root: Path, probe: Optional[Callable[[], Optional[Detection]]] = None) -> Detection:
    vendor = read_dmi(sysfs_root, "sys_vendor")
    if vendor == "Amazon EC2" or read_dmi(sysfs_root, "board_vendor") == "Amazon EC2":
        return Detection("aws", f"sys_vendor={vendor!r}")
    if probe is not None:
        found = probe()
        if found is not None:
            return found
    return Detection(None, "no cloud evidence in DMI")
