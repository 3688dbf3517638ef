"""Which cloud this is, from DMI files first and, only if they say nothing, a brief probe.

DMI needs no network and no root (the few root-only files are simply no evidence when
they cannot be read). Every rule that matches is kept as evidence; evidence for two
clouds is reported as a conflict, never settled by a guess.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import requests

from agent.metadata import TOKEN_PATH
from agent.providers import alibaba, aws

if TYPE_CHECKING:
    from agent.config import Config

LOG = logging.getLogger(__name__)

DMI = Path("class", "dmi", "id")
PROBE_TIMEOUT = 0.5
PROBE_TTL = "60"
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
_AWS_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}([0-9a-f]{9})?")

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


def _is_ec2_uuid(value: str) -> bool:
    """Xen-era EC2 UUIDs start with ``ec2``, in either byte order (as cloud-init checks)."""
    value = value.lower()
    if value.startswith("ec2"):
        return True
    try:
        return uuid.UUID(value).bytes_le.hex().startswith("ec2")
    except ValueError:
        return False


Rule = tuple[str, str, Callable[[str], bool]]
"""(cloud, file under the sysfs root, test of its contents)."""

RULES: tuple[Rule, ...] = (
    ("aws", "class/dmi/id/sys_vendor", lambda v: v == "Amazon EC2"),
    ("aws", "class/dmi/id/board_vendor", lambda v: v == "Amazon EC2"),
    ("aws", "class/dmi/id/board_asset_tag", lambda v: bool(_AWS_INSTANCE_ID.fullmatch(v))),
    ("aws", "hypervisor/uuid", _is_ec2_uuid),
    ("aws", "class/dmi/id/product_uuid", _is_ec2_uuid),
    ("aws", "class/dmi/id/bios_version", lambda v: "amazon" in v.lower()),
    ("alibaba", "class/dmi/id/product_name", lambda v: v == "Alibaba Cloud ECS"),
    ("alibaba", "class/dmi/id/sys_vendor", lambda v: v == "Alibaba Cloud"),
    ("gcp", "class/dmi/id/product_name", lambda v: v in ("Google Compute Engine", "Google")),
    ("azure", "class/dmi/id/chassis_asset_tag", lambda v: v == AZURE_ASSET_TAG),
    ("tencent", "class/dmi/id/sys_vendor", lambda v: v == "Tencent Cloud"),
    ("oracle", "class/dmi/id/chassis_asset_tag", lambda v: v == "OracleCloud.com"),
    ("huawei", "class/dmi/id/chassis_asset_tag", lambda v: v == "HUAWEICLOUD"),
)


def dmi_evidence(sysfs_root: Path) -> dict[str, list[str]]:
    """Every matching rule, by cloud, as ``<file>='<value>'`` strings."""
    found: dict[str, list[str]] = {}
    contents: dict[str, str] = {}
    for cloud, name, test in RULES:
        if name not in contents:
            contents[name] = _read(sysfs_root / name)
        value = contents[name]
        if value and test(value):
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
    """A probe that asks the AWS, then the Alibaba token endpoint, briefly and without proxies.

    A token is the one answer neither service gives for the other's header, and the PUT
    changes nothing on the instance.
    """
    candidates = (
        ("aws", config.aws.metadata_url, aws.TTL_HEADER),
        ("alibaba", config.alibaba.metadata_url, alibaba.TTL_HEADER),
    )

    def probe() -> Optional[Detection]:
        with requests.Session() as session:
            session.trust_env = False  # link-local addresses never go through a proxy
            for cloud, base_url, ttl_header in candidates:
                url = base_url.rstrip("/") + TOKEN_PATH
                try:
                    response = session.put(
                        url, headers={ttl_header: PROBE_TTL}, timeout=PROBE_TIMEOUT
                    )
                except requests.RequestException as exc:
                    LOG.debug("%s metadata probe at %s: %s", cloud, url, type(exc).__name__)
                    continue
                # Only the status is used: the body is a token and stays out of the logs.
                if response.status_code == 200 and response.text.strip():
                    LOG.info("%s metadata token endpoint %s answered", cloud, url)
                    return Detection(cloud, f"{cloud} token endpoint {url} issued a token")
                LOG.debug("%s metadata probe at %s: %d", cloud, url, response.status_code)
        return None

    return probe
