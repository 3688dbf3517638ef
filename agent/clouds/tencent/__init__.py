"""Tencent Cloud CVM: the spot instance reclaim notice from instance metadata.

``watchers`` (the termination-time path), ``parse`` (its UTC+8 time), ``config`` (the
``[tencent]`` section), ``detect`` (DMI evidence), ``mock`` (the mock's flavour). There
is no confirmation through the cloud API: the metadata notice alone ends the run.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional

from agent.clock import Clock
from agent.clouds._shared.http import MetadataError
from agent.clouds.base import Cloud, Watcher, identity_values
from agent.clouds.tencent import detect, parse, watchers
from agent.clouds.tencent.config import TencentConfig

if TYPE_CHECKING:
    from agent.notice import Notice

LOG = logging.getLogger(__name__)


class TencentCloud(Cloud):
    name = parse.NAME
    section = TencentConfig
    dmi = detect.DMI
    mock_module = "agent.clouds.tencent.mock"

    def __init__(self) -> None:
        self.client: Optional[watchers.TencentMetadata] = None
        """The watchers' client, so the shutdown path reuses the instance id it read."""

    def watchers(self, section: TencentConfig, clock: Clock) -> list[Watcher]:
        if not section.spot.enabled:
            return []
        client = self.client = watchers.TencentMetadata(section.metadata_url, section.timeout)
        return [watchers.SpotWatcher(section, clock, client)]

    def identity(self, section: TencentConfig, clock: Clock) -> dict[str, str]:
        """``placement/region``, ``placement/zone`` and ``instance/instance-type``: three
        plain GETs, each bounded by the section's timeout; stops at the first failure."""
        known = self.client
        same = known is not None and known.base_url == section.metadata_url.rstrip("/")
        client = known if same and known is not None else None
        if client is None:
            client = watchers.TencentMetadata(section.metadata_url, section.timeout)
        found: dict[str, Optional[str]] = {}
        try:
            for key, path in (
                ("region", watchers.PLACEMENT_REGION),
                ("zone", watchers.PLACEMENT_ZONE),
                ("instance_type", watchers.INSTANCE_TYPE),
            ):
                found[key] = client.get(path, timeout=section.timeout)
        except Exception as exc:  # MetadataError: never raised to the caller
            LOG.warning("cannot read the instance's placement: %s", exc)
        finally:
            if not same:
                client.close()
        return identity_values(**found)

    def interrupted_now(
        self, section: TencentConfig, clock: Clock, timeout: float
    ) -> Optional[Notice]:
        end = time.monotonic() + timeout
        fresh = watchers.TencentMetadata(section.metadata_url, max(0.05, timeout))
        known = self.client
        # The watchers' client has the instance id already; its own lock may be held by a
        # poll in flight, so the termination time is asked on a client of its own.
        same = known is not None and known.base_url == fresh.base_url
        try:
            body = fresh.get(watchers.TERMINATION_TIME, timeout=max(0.05, timeout / 2))
            if body is None or not body.strip():
                return None
            ids = known if same and known is not None else fresh
            instance_id = ids.instance_id(max(0.05, end - time.monotonic()))
            return parse.parse_notice(body, instance_id, clock.now())
        except (MetadataError, ValueError) as exc:
            LOG.warning("cannot tell whether a spot reclaim is under way: %s", exc)
            return None
        finally:
            fresh.close()


CLOUD = TencentCloud()
