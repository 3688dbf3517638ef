"""The shutdown path: a stop that is itself the interruption.

GCP sets ``preempted`` at the moment it sends the ACPI soft-off, so systemd is already
stopping the agent when the notice appears; other clouds can race the same way. A stop with
no termination drained in this boot therefore asks the cloud once, briefly, whether this is
an interruption, and drains it within ``shutdown_timeout``. ``drain_on_shutdown`` runs the
hooks for kind ``shutdown`` on every other stop.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta
from typing import Any, Optional

from agent import lifecycle as lc
from agent.clock import Clock
from agent.clouds.base import Cloud
from agent.config import Config
from agent.logs import fields
from agent.notice import SHUTDOWN, TERMINAL_KINDS, Notice

LOG = logging.getLogger(__name__)

ASK_TIMEOUT = 2.0
"""How long a stop waits for the cloud's answer to "is this an interruption?"."""


def shutdown_notice(
    cloud: Cloud, section: Any, config: Config, clock: Clock, lifecycle: lc.Lifecycle
) -> Optional[Notice]:
    """The notice to drain before this stop ends the agent, its deadline within
    ``shutdown_timeout``; None to exit at once."""
    records = lifecycle.all().values()
    if any(r["notice"].get("kind") in TERMINAL_KINDS for r in records):
        return None  # this boot's termination was drained already
    now = clock.now()
    bound = now + timedelta(seconds=config.shutdown_timeout)
    notice = None
    try:
        notice = cloud.interrupted_now(section, clock, ASK_TIMEOUT)
    except Exception as exc:
        LOG.warning("cannot tell whether this stop is an interruption: %s", exc)
    if notice is None and config.drain_on_shutdown:
        # Each stop is its own event: a later stop in this boot runs the hooks again.
        stop_id = now.strftime("%Y%m%dT%H%M%S")
        notice = Notice.observed(
            cloud.name, SHUTDOWN, "shutdown", "local", bound, "", now, cloud_event_id=stop_id
        )
    if notice is None:
        return None
    if notice.deadline is None or notice.deadline > bound:
        notice = dataclasses.replace(notice, deadline=bound)
    LOG.warning(
        "stopping during a %s notice: draining on the shutdown path (for up to %.0f s)",
        notice.kind,
        config.shutdown_timeout,
        extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind),
    )
    return notice
