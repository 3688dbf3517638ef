"""Google Compute Engine: Spot/preemptible VM preemption and host maintenance, watched with
hanging GETs on the metadata server.

``watchers`` (the hanging GETs), ``metadata`` (the client: flavour header, ETags),
``parse`` (values into notices), ``config`` (the ``[gcp]`` section), ``detect`` (DMI
evidence), ``mock`` (the mock's flavour, with hanging GETs). There is no confirmation
through the cloud API: the metadata notice alone ends the run. By default ``preempted``
turns ``TRUE`` as the VM gets its ACPI soft-off, so :meth:`GcpCloud.interrupted_now`, asked
on the shutdown path, is how most GCP drains start.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional

from agent.clock import Clock
from agent.clouds._shared.http import MetadataError
from agent.clouds.base import Cloud, Watcher, identity_values
from agent.clouds.gcp import detect, parse, watchers
from agent.clouds.gcp.config import GcpConfig
from agent.clouds.gcp.metadata import GcpMetadata

if TYPE_CHECKING:
    from agent.notice import Notice

LOG = logging.getLogger(__name__)

UNKNOWN_ID = "unknown"
"""The instance id of a shutdown-path notice when the id itself cannot be read in time."""


class GcpCloud(Cloud):
    name = parse.NAME
    section = GcpConfig
    dmi = detect.DMI
    mock_module = "agent.clouds.gcp.mock"

    def __init__(self) -> None:
        self.identity_source: Optional[watchers.Identity] = None
        """The watchers' identity, so the shutdown path reuses the id they read."""

    def watchers(self, section: GcpConfig, clock: Clock) -> list[Watcher]:
        identity = self.identity_source = watchers.Identity(section.metadata_url, section.timeout)
        return watchers.build(section, clock, identity)

    def identity(self, section: GcpConfig, clock: Clock) -> dict[str, str]:
        """Zone (``instance/zone``, often read by the watchers already), its region, and the
        machine type (``instance/machine-type``): two plain GETs at most."""
        identity = self.identity_source
        own = identity is None or identity.base_url != section.metadata_url.rstrip("/")
        if identity is None or own:
            identity = watchers.Identity(section.metadata_url, section.timeout)
        try:
            zone, machine_type = identity.placement(section.timeout)
        except Exception as exc:  # MetadataError, ValueError: never raised to the caller
            LOG.warning("cannot read the instance's zone and machine type: %s", exc)
            zone, machine_type = identity.zone, None
        finally:
            if own:
                identity.close()
        return identity_values(
            region=parse.region_of(zone) if zone else None, zone=zone, instance_type=machine_type
        )

    def interrupted_now(self, section: GcpConfig, clock: Clock, timeout: float) -> Optional[Notice]:
        """``preempted`` once, then the instance id (cached if the watchers read it)."""
        end = time.monotonic() + timeout
        client = GcpMetadata(section.metadata_url, max(0.05, timeout))
        try:
            value = client.get(watchers.PREEMPTED, timeout=max(0.05, timeout * 0.6))
            if value is None or not parse.parse_preempted(value.body):
                return None
            identity = self.identity_source
            if identity is None or identity.base_url != client.base_url:
                identity = watchers.Identity(section.metadata_url, section.timeout)
            try:
                instance_id = identity.instance_id(max(0.05, end - time.monotonic()))
            except (MetadataError, ValueError) as exc:
                LOG.warning("preempted is TRUE but the instance id is unreadable: %s", exc)
                instance_id = UNKNOWN_ID
            now = clock.now()
            return parse.preempted_notice(value.body, instance_id, now, section.notice_seconds, now)
        except (MetadataError, ValueError) as exc:
            LOG.warning("cannot tell whether this VM is being preempted: %s", exc)
            return None
        finally:
            client.close()


CLOUD = GcpCloud()
