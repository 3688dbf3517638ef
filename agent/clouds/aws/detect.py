"""How a machine shows it runs on EC2, without the network (the rules cloud-init uses too)."""

from __future__ import annotations

import re
import uuid

from agent.clouds.base import DmiRule

_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8}([0-9a-f]{9})?")


def is_ec2_uuid(value: str) -> bool:
    """Xen-era EC2 UUIDs start with ``ec2``, in either byte order (as cloud-init checks)."""
    value = value.lower()
    if value.startswith("ec2"):
        return True
    try:
        return uuid.UUID(value).bytes_le.hex().startswith("ec2")
    except ValueError:
        return False


DMI = (
    DmiRule("class/dmi/id/sys_vendor", lambda v: v == "Amazon EC2"),
    DmiRule("class/dmi/id/board_vendor", lambda v: v == "Amazon EC2"),
    DmiRule("class/dmi/id/board_asset_tag", lambda v: bool(_INSTANCE_ID.fullmatch(v))),
    DmiRule("hypervisor/uuid", is_ec2_uuid),
    DmiRule("class/dmi/id/product_uuid", is_ec2_uuid),
    DmiRule("class/dmi/id/bios_version", lambda v: "amazon" in v.lower()),
)
