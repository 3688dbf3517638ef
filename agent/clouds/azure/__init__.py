"""Microsoft Azure: Scheduled Events (Spot eviction, scale-in/delete, maintenance) from IMDS.

``watchers`` (the events poll), ``metadata`` (the client: ``Metadata: true``), ``parse``
(documents into notices), ``config`` (the ``[azure]`` section), ``detect`` (DMI evidence),
``mock`` (the mock's flavour, with the approval endpoint).

There is no confirmation through the cloud API. After the drain of an event the agent
approves it (:meth:`AzureCloud.after_drain`), so the platform goes ahead without waiting
for ``NotBefore``; the drained notice ends the run. An event that disappears before it
starts was cancelled: the core sees the notice go and runs the resume hooks.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Optional

from agent.clock import Clock
from agent.clouds._shared.http import MetadataError
from agent.clouds.azure import detect, parse, watchers
from agent.clouds.azure.config import AzureConfig
from agent.clouds.azure.metadata import COMPUTE, EVENTS, AzureMetadata
from agent.clouds.base import Cloud, Watcher, identity_values
from agent.notice import TERMINAL_KINDS

if TYPE_CHECKING:
    from agent.notice import Notice

LOG = logging.getLogger(__name__)


class AzureCloud(Cloud):
    name = parse.NAME
    section = AzureConfig
    dmi = detect.DMI
    mock_module = "agent.clouds.azure.mock"

    def __init__(self) -> None:
        self.watcher: Optional[watchers.EventsWatcher] = None
        """The events watcher, so the shutdown path reuses the VM name it read."""

    def watchers(self, section: AzureConfig, clock: Clock) -> list[Watcher]:
        if not section.events.enabled:
            return []
        self.watcher = watchers.EventsWatcher(section, clock)
        return [self.watcher]

    def identity(self, section: AzureConfig, clock: Clock) -> dict[str, str]:
        """``location``, ``zone`` and ``vmSize`` from the compute document: one GET on a
        client of its own (the watcher's is busy polling every second)."""
        client = AzureMetadata(section.metadata_url, section.timeout)
        try:
            body = client.get(COMPUTE)
            if body is None:
                LOG.warning("no compute document: webhooks go without region and zone")
                return {}
            return identity_values(**parse.parse_compute(body))
        except Exception as exc:  # MetadataError, ValueError: never raised to the caller
            LOG.warning("cannot read the VM's compute document: %s", exc)
            return {}
        finally:
            client.close()

    def interrupted_now(
        self, section: AzureConfig, clock: Clock, timeout: float
    ) -> Optional[Notice]:
        """A Preempt or Terminate event for this VM in one look at the document."""
        end = time.monotonic() + timeout
        client = AzureMetadata(section.metadata_url, max(0.05, timeout))
        try:
            known = self.watcher.vm_name.known if self.watcher is not None else None
            vm_name = known or watchers.VmName(client).get(max(0.05, timeout / 2))
            body = client.get(EVENTS, max(0.05, end - time.monotonic()))
            if body is None:
                return None
            events = [
                e for e in parse.events_for(body, vm_name) if e.event_type in parse.TERMINATIONS
            ]
            if not events:
                return None
            now = clock.now()
            found = watchers.Deadlines().notices(events[:1], vm_name, now)
            return found[0]
        except (MetadataError, ValueError) as exc:
            LOG.warning("cannot tell whether an eviction is under way: %s", exc)
            return None
        finally:
            client.close()

    def after_drain(self, notice: Notice, section: AzureConfig, clock: Clock) -> bool:
        """Approve the drained event so the platform need not wait for ``NotBefore``.

        True when the service took the approval. Never raises: a failed approval only
        means the event starts at its ``NotBefore``, as it would without the agent.
        """
        if notice.provider != self.name or not section.approve:
            return False
        event_id = parse.event_id_of(notice)
        if event_id is None:
            LOG.warning("cannot approve %s: no EventId in the notice", notice.event_id)
            return False
        client = AzureMetadata(section.metadata_url, section.timeout)
        try:
            client.post(EVENTS, parse.approval_body(event_id))
        except MetadataError as exc:
            LOG.warning("approving scheduled event %s failed: %s", event_id, exc)
            return False
        finally:
            client.close()
        what = "the eviction" if notice.kind in TERMINAL_KINDS else "the event"
        LOG.info("approved scheduled event %s: %s may start now", event_id, what)
        return True


CLOUD = AzureCloud()
