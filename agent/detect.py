"""Which cloud this is, from DMI files first and, only if they say nothing, a brief probe.

DMI needs no network and no root (the few root-only files are simply no evidence when
they cannot be read). Every rule that matches is kept as evidence; evidence for two
clouds is reported as a conflict, never settled by a guess. The rules and probes of the
clouds the agent watches come from their packages (``Cloud.dmi``, ``Cloud.probe``); the
few below are for clouds it can recognise but not watch, so ``check`` can say which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import requests

from agent import clouds
from agent.clouds.base import DmiRule

if TYPE_CHECKING:
    from agent.config import Config

LOG = logging.getLogger(__name__)

DMI = Path("class", "dmi", "id")
PROBE_TIMEOUT = 0.5

Probe = Callable[[], Optional["Detection"]]


@dataclass(frozen=True)
class Detection:
    cloud: Optional[str]
    evidence: str


def read_dmi(sysfs_root: Path, name: str) -> str:
    """The stripped contents of a DMI file; "" when absent or unreadable (no evidence)."""
    return _read(sysfs_root / DMI / name)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError as exc:
        LOG.debug("cannot read %s: %s", path, exc.strerror or exc)
        return ""


Rule = tuple[str, DmiRule]
"""(cloud, rule)."""

UNWATCHED: tuple[Rule, ...] = (
    ("oracle", DmiRule("class/dmi/id/chassis_asset_tag", lambda v: v == "OracleCloud.com")),
    ("huawei", DmiRule("class/dmi/id/chassis_asset_tag", lambda v: v == "HUAWEICLOUD")),
)
"""Clouds recognised but not watched: run exits 5 there, naming the cloud."""


def rules() -> tuple[Rule, ...]:
    """Every DMI rule: the registered clouds' own, then those of clouds not watched."""
    own = tuple((cloud.name, rule) for cloud in clouds.all_clouds() for rule in cloud.dmi)
    return own + UNWATCHED


def dmi_evidence(sysfs_root: Path) -> dict[str, list[str]]:
    """Every matching rule, by cloud, as ``<file>='<value>'`` strings."""
    found: dict[str, list[str]] = {}
    contents: dict[str, str] = {}
    for cloud, rule in rules():
        name = rule.file
        if name not in contents:
            contents[name] = _read(sysfs_root / name)
        value = contents[name]
        if value and rule.test(value):
            found.setdefault(cloud, []).append(f"{sysfs_root / name}={value!r}")
    return found


def detect(sysfs_root: Path, probe: Optional[Probe] = None) -> Detection:
    """The cloud from DMI; ``probe`` is asked only when DMI has no evidence at all."""
    found = dmi_evidence(sysfs_root)
    if len(found) == 1:
        (cloud, evidence), *_ = found.items()
        return Detection(cloud, ", ".join(evidence))
    if found:
        evidence = "; ".join(f"{c}: {', '.join(e)}" for c, e in sorted(found.items()))
        LOG.warning("DMI points at more than one cloud, not guessing: %s", evidence)
        return Detection(None, f"conflicting evidence: {evidence}")
    if probe is not None:
        detection = probe()
        if detection is not None:
            return detection
        return Detection(None, "no cloud evidence in DMI and no metadata service answered")
    return Detection(None, "no cloud evidence in DMI")


def metadata_probe(config: Config) -> Probe:
    """A probe that asks each registered cloud's metadata request in turn, briefly and
    without proxies; the first that answers 200 with a body is the cloud.

    Each request is one only that cloud's service answers that way (a token PUT with its
    own header), and changes nothing on the instance.
    """
    candidates = []
    for cloud in clouds.all_clouds():
        request = cloud.probe(config.section(cloud.name))
        if request is not None:
            candidates.append((cloud.name, request))

    def probe() -> Optional[Detection]:
        with requests.Session() as session:
            session.trust_env = False  # link-local addresses never go through a proxy
            for cloud, request in candidates:
                url = request.url
                try:
                    response = session.request(
                        request.method, url, headers=request.headers, timeout=PROBE_TIMEOUT
                    )
                except requests.RequestException as exc:
                    LOG.debug("%s metadata probe at %s: %s", cloud, url, type(exc).__name__)
                    continue
                # Only the status is used: the body may be a token and stays out of the logs.
                if response.status_code == 200 and response.text.strip():
                    LOG.info("%s metadata %s %s answered", cloud, request.what, url)
                    return Detection(cloud, f"{cloud} {request.what} {url} answered")
                LOG.debug("%s metadata probe at %s: %d", cloud, url, response.status_code)
        return None

    return probe
