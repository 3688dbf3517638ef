"""How a machine shows it runs on Azure, without the network."""

from __future__ import annotations

from agent.clouds.base import DmiRule

ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
"""The chassis asset tag every Azure VM carries (the one cloud-init checks)."""

DMI = (DmiRule("class/dmi/id/chassis_asset_tag", lambda v: v == ASSET_TAG),)
