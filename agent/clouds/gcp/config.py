"""The ``[gcp]`` config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from agent.config import http_url, not_negative, option, positive


def _wait_range(value: int) -> Optional[str]:
    return None if 1 <= value <= 3600 else "must be between 1 and 3600"


@dataclass(frozen=True)
class HangingWatcherConfig:
    """One metadata key watched with hanging GETs: the server answers when it changes."""

    enabled: bool = True
    interval: float = option(
        0.0, not_negative, "pause before the next hanging GET; 0 = at once, as GCP's agents do"
    )


@dataclass(frozen=True)
class GcpConfig:
    metadata_url: str = option("http://metadata.google.internal", http_url)
    timeout: float = option(2.0, positive, "bound of a plain request, seconds")
    wait_seconds: int = option(
        60, _wait_range, "timeout_sec of a hanging GET: how long the server may hold it"
    )
    max_backoff: float = option(10.0, positive, "longest wait between failing requests")
    notice_seconds: float = option(
        30.0,
        positive,
        "deadline after preempted turns TRUE: 30 (best effort), or the VM's "
        "preemptionNoticeDuration (e.g. 120)",
    )
    preempted: HangingWatcherConfig = field(default_factory=HangingWatcherConfig)
    maintenance: HangingWatcherConfig = field(default_factory=HangingWatcherConfig)
