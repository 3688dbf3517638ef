"""The Tencent Cloud spot watcher: ``spot/termination-time``, plain GETs, no token.

The instance id is read once; a 404 at the termination path means nothing is scheduled.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

from agent.clock import Clock
from agent.clouds._shared.http import HttpClient, MetadataError
from agent.clouds.base import Watcher
from agent.clouds.tencent import parse
from agent.clouds.tencent.config import TencentConfig
from agent.notice import Notice

LOG = logging.getLogger(__name__)

INSTANCE_ID = "/latest/meta-data/instance-id"
TERMINATION_TIME = "/latest/meta-data/spot/termination-time"
# Tencent's documented placement and type items; unverified in the team's reference notes
# (/work/shared/reference/clouds.md lists termination-time and instance-id only). Read once,
# for the webhooks' identity; their absence is no failure.
PLACEMENT_REGION = "/latest/meta-data/placement/region"
PLACEMENT_ZONE = "/latest/meta-data/placement/zone"
INSTANCE_TYPE = "/latest/meta-data/instance/instance-type"


class TencentMetadata:
    """GETs under ``/latest/meta-data/``; one request at a time; the instance id cached."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = HttpClient(base_url, timeout=timeout)
        self._lock = threading.Lock()
        self._instance_id: Optional[str] = None

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, timeout: Optional[float] = None) -> Optional[str]:
        """The body at ``path``; None for 404; MetadataError for anything transient."""
        response = self._http.request("GET", path, timeout=timeout)
        if response.status == 404:
            return None
        if response.status != 200:
            raise MetadataError(f"GET {path} answered {response.status}", response.retry_after)
        return response.text

    def instance_id(self, timeout: Optional[float] = None) -> str:
        with self._lock:
            if self._instance_id is None:
                body = self.get(INSTANCE_ID, timeout)
                if body is None:
                    raise MetadataError("instance-id is missing")
                self._instance_id = parse.parse_instance_id(body)
                LOG.info("Tencent Cloud instance %s", self._instance_id)
            return self._instance_id


class SpotWatcher(Watcher):
    name = "tencent-spot"

    def __init__(self, section: TencentConfig, clock: Clock, client: TencentMetadata) -> None:
        self.interval = section.spot.interval
        self.max_backoff = max(self.interval, section.max_backoff)
        self._clock = clock
        self._client = client

    def poll(self) -> list[Notice]:
        instance_id = self._client.instance_id()
        body = self._client.get(TERMINATION_TIME)
        notice = parse.parse_notice(body, instance_id, self._clock.now())
        return [notice] if notice is not None else []

    def close(self) -> None:
        self._client.close()
