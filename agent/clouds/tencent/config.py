"""The ``[tencent]`` config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from agent.config import WatcherConfig, http_url, option, positive


@dataclass(frozen=True)
class TencentConfig:
    metadata_url: str = option("http://metadata.tencentyun.com", http_url)
    timeout: float = option(2.0, positive, "bound of a request, seconds")
    max_backoff: float = option(10.0, positive, "longest wait between failing polls")
    spot: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 2.0))
