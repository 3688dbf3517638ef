"""The mock metadata service: a generic scriptable server, flavoured by each cloud's package.

``python -m agent.mock --flavor <cloud>`` serves one in the foreground.
"""

from __future__ import annotations

from agent.mock.flavor import Flavor, MockCloud, rfc3339
from agent.mock.server import MockMetadataServer, RecordedRequest

__all__ = ["Flavor", "MockCloud", "MockMetadataServer", "RecordedRequest", "flavors", "rfc3339"]


def flavors() -> dict[str, MockCloud]:
    """Every registered cloud that has a mock flavour, by name."""
    from agent import clouds

    found = {cloud.name: cloud.mock() for cloud in clouds.all_clouds()}
    return {name: mock for name, mock in found.items() if mock is not None}
