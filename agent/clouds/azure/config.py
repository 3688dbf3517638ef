"""The ``[azure]`` config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from agent.config import WatcherConfig, http_url, option, positive


@dataclass(frozen=True)
class AzureConfig:
    metadata_url: str = option("http://169.254.169.254", http_url)
    timeout: float = option(2.0, positive, "bound of a request, seconds")
    startup_timeout: float = option(
        130.0,
        positive,
        "bound of the first Scheduled Events request: it switches the service on and can "
        "take up to two minutes",
    )
    max_backoff: float = option(10.0, positive, "longest wait between failing polls")
    approve: bool = field(
        default=True,
        metadata={"doc": "after a drain, approve the event so it need not wait for NotBefore"},
    )
    events: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 1.0))
