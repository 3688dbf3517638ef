"""One module per cloud. Each exposes ``PROVIDER``, a :class:`~agent.providers.base.Provider`.

The daemon only sees the base interface; cloud quirks stay in the cloud's module.
"""

from __future__ import annotations

import importlib

from agent.providers.base import Provider

MODULES = {"aws": "agent.providers.aws", "alibaba": "agent.providers.alibaba"}


def get(name: str) -> Provider:
    """The provider called ``name``; KeyError when the agent cannot watch that cloud."""
    module = importlib.import_module(MODULES[name])
    return module.PROVIDER  # type: ignore[no-any-return]
