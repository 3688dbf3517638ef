"""How a machine shows it runs on Compute Engine, without the network."""

from __future__ import annotations

from agent.clouds.base import DmiRule

DMI = (DmiRule("class/dmi/id/product_name", lambda v: v in ("Google Compute Engine", "Google")),)
