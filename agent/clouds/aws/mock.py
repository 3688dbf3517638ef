"""The EC2 flavour of the mock metadata service (IMDSv2), and the paths an instance has."""

from __future__ import annotations

import json
from datetime import datetime

from agent.clouds.aws.watchers import IDENTITY, SPOT_ACTION, TOKEN_HEADER, TTL_HEADER
from agent.mock.flavor import Flavor, MockCloud, rfc3339
from agent.mock.server import MockMetadataServer

FLAVOR = Flavor("aws", TTL_HEADER, TOKEN_HEADER, 401)


def spot_action(action: str, when: datetime) -> str:
    """The body of ``/latest/meta-data/spot/instance-action`` for ``action`` at ``when``."""
    return json.dumps({"action": action, "time": rfc3339(when)})


def defaults(
    server: MockMetadataServer,
    instance_id: str = "i-0123456789abcdef0",
    region: str = "us-east-1",
    life_cycle: str = "spot",
) -> None:
    """Fill in the identity paths the agent reads on an EC2 instance."""
    document = {
        "instanceId": instance_id,
        "region": region,
        "availabilityZone": f"{region}a",
        "instanceType": "m5.large",
        "accountId": "123456789012",
    }
    server.set("/latest/meta-data/instance-id", instance_id)
    server.set("/latest/meta-data/instance-life-cycle", life_cycle)
    server.set(IDENTITY, json.dumps(document, indent=2))


def spot_notice(server: MockMetadataServer, deadline: datetime, at: float) -> str:
    """A spot termination notice for ``deadline`` that appears at ``at``."""
    server.set_at(SPOT_ACTION, spot_action("terminate", deadline), at)
    return SPOT_ACTION


MOCK = MockCloud(FLAVOR, defaults, spot_notice)
