"""How a machine shows it runs on Tencent Cloud CVM, without the network."""

from __future__ import annotations

from agent.clouds.base import DmiRule

DMI = (DmiRule("class/dmi/id/sys_vendor", lambda v: v == "Tencent Cloud"),)
