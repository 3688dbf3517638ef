"""How a machine shows it runs on Alibaba Cloud ECS, without the network."""

from __future__ import annotations

from agent.clouds.base import DmiRule

DMI = (
    DmiRule("class/dmi/id/product_name", lambda v: v == "Alibaba Cloud ECS"),
    DmiRule("class/dmi/id/sys_vendor", lambda v: v == "Alibaba Cloud"),
)
