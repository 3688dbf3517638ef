"""The clouds the agent can watch: one package each, listed once here.

A package exposes ``CLOUD``, an :class:`agent.clouds.base.Cloud`. The command line, the
config loader, detection and the mock metadata service all learn the list from
:data:`REGISTRY`, so adding a cloud is its package plus one line below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.clouds.base import Cloud

REGISTRY: dict[str, str] = {
    "aws": "agent.clouds.aws",
    "alibaba": "agent.clouds.alibaba",
    "gcp": "agent.clouds.gcp",
    "azure": "agent.clouds.azure",
    "tencent": "agent.clouds.tencent",
}
"""Cloud name -> package. The order is the metadata probe's order."""


def names() -> tuple[str, ...]:
    """The clouds the agent can watch, in registry order."""
    return tuple(REGISTRY)


def get(name: str) -> Cloud:
    """The cloud called ``name``; KeyError when the agent cannot watch that cloud."""
    module = importlib.import_module(REGISTRY[name])
    return module.CLOUD  # type: ignore[no-any-return]


def all_clouds() -> list[Cloud]:
    """Every registered cloud, in registry order."""
    return [get(name) for name in REGISTRY]
