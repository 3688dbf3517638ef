"""Pieces shared by clouds whose metadata service speaks the EC2 protocol (AWS, Alibaba).

Both serve plain-text bodies at ``/latest/meta-data/...`` behind the same token flow and
differ in header names and a few paths, so a cloud module only states its constants and
parse functions, the way cloud-init's Alibaba source reuses its EC2 one.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable, ClassVar, Optional, Protocol

from agent.clock import Clock
from agent.metadata import MetadataClient, MetadataError
from agent.notice import Notice
from agent.providers.base import Watcher

LOG = logging.getLogger(__name__)

INSTANCE_ID = "/latest/meta-data/instance-id"


class Endpoint(Protocol):
    """The settings a cloud's config section gives for reaching its metadata service."""

    @property
    def metadata_url(self) -> str: ...
    @property
    def token_ttl(self) -> int: ...
    @property
    def timeout(self) -> float: ...


class Instance:
    """The metadata client and the identity values read once per process.

    Identity never changes while the agent runs, and Alibaba rate-limits its service, so
    each value is fetched once and cached; only a transient failure makes it ask again.
    Subclasses set the token header names, whether a refused token request means "no
    tokens here", and which other identity paths to read up front.
    """

    ttl_header: ClassVar[str]
    token_header: ClassVar[str]
    tokenless_fallback: ClassVar[bool]
    also_read: ClassVar[tuple[str, ...]] = ()
    """Optional identity paths fetched along with the instance id, before any notice."""

    def __init__(self, config: Endpoint, clock: Clock) -> None:
        self.clock = clock
        self.client = MetadataClient(
            config.metadata_url,
            ttl_header=self.ttl_header,
            token_header=self.token_header,
            token_ttl=config.token_ttl,
            timeout=config.timeout,
            clock=clock,
            tokenless_fallback=self.tokenless_fallback,
        )
        self._cache: dict[str, str] = {}
        self._absent: set[str] = set()

    def _fetch(self, path: str) -> str:
        body = self.client.get(path)
        return body.strip() if body else ""

    def read_once(self, path: str) -> str:
        """The stripped body at ``path``, fetched on first success only.

        Missing or empty raises MetadataError and is not cached: the next poll asks again.
        """
        value = self._cache.get(path)
        if value is None:
            value = self._fetch(path)
            if not value:
                raise MetadataError(f"{_name(path)} is empty or missing")
            self._cache[path] = value
            LOG.info("%s is %s", _name(path), value)
        return value

    def read_once_optional(self, path: str) -> Optional[str]:
        """Like :meth:`read_once`, but a 404 or empty body is an answer (None), kept too.

        For values the watchers can do without: their absence must not stop polling.
        """
        if path in self._absent:
            return None
        if path not in self._cache:
            value = self._fetch(path)
            if not value:
                LOG.warning("%s is empty or missing; carrying on without it", _name(path))
                self._absent.add(path)
                return None
            self._cache[path] = value
            LOG.info("%s is %s", _name(path), value)
        return self._cache[path]

    @property
    def instance_id(self) -> str:
        instance_id = self.read_once(INSTANCE_ID)
        for path in self.also_read:
            # Read now, while nothing is pending, not in the middle of a drain.
            self.read_once_optional(path)
        return instance_id


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


Parser = Callable[[str, str, datetime], Any]


class PathWatcher(Watcher):
    """Polls one path; 404 means nothing pending. ``parse`` may return one, many or none."""

    def __init__(
        self, name: str, path: str, interval: float, parse: Parser, instance: Instance
    ) -> None:
        self.name = name
        self.path = path
        self.interval = interval
        self._parse = parse
        self._instance = instance

    def poll(self) -> list[Notice]:
        instance_id = self._instance.instance_id
        body = self._instance.client.get(self.path)
        if body is None:
            return []
        found = self._parse(body, instance_id, self._instance.clock.now())
        if found is None:
            return []
        return found if isinstance(found, list) else [found]
