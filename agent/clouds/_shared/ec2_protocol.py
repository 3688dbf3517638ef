"""Pieces shared by clouds whose metadata service speaks the EC2 protocol (AWS, Alibaba).

Both serve plain-text bodies at ``/latest/meta-data/...`` behind the same token flow and
differ in header names and a few paths, so a cloud package only states its constants and
parse functions, the way cloud-init's Alibaba source reuses its EC2 one.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any, Callable, ClassVar, Optional, Protocol, TypeVar

from agent.clock import Clock
from agent.clouds._shared.token_client import MetadataClient, MetadataError
from agent.clouds.base import Watcher
from agent.notice import Notice

LOG = logging.getLogger(__name__)

INSTANCE_ID = "/latest/meta-data/instance-id"
UNKNOWN_INSTANCE = "unknown"
"""The instance id of a termination notice seen while the instance id could not be read."""


class Endpoint(Protocol):
    """The settings a cloud's config section gives for reaching its metadata service."""

    @property
    def metadata_url(self) -> str: ...
    @property
    def token_ttl(self) -> int: ...
    @property
    def timeout(self) -> float: ...
    @property
    def max_backoff(self) -> float: ...


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
            retry_after_cap=config.max_backoff,
        )
        self._cache: dict[str, str] = {}
        self._absent: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _lock(self, path: str) -> threading.Lock:
        """One lock per path: two threads asking for the same value (a watcher and the
        identity reader) make one request, and neither waits on another path's answer."""
        with self._locks_lock:
            return self._locks.setdefault(path, threading.Lock())

    def _fetch(self, path: str) -> str:
        body = self.client.get(path)
        return body.strip() if body else ""

    def read_once(self, path: str) -> str:
        """The stripped body at ``path``, fetched on first success only.

        Missing or empty raises MetadataError and is not cached: the next poll asks again.
        """
        with self._lock(path):
            value = self._cache.get(path)
            if value is None:
                value = self._fetch(path)
                if not value:
                    raise MetadataError(f"{_name(path)} is empty or missing", answered=True)
                self._cache[path] = value
                LOG.info("%s is %s", _name(path), value)
            return value

    def read_once_optional(self, path: str) -> Optional[str]:
        """Like :meth:`read_once`, but a 404 or empty body is an answer (None), kept too.

        For values the watchers can do without: their absence must not stop polling.
        """
        with self._lock(path):
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

    def read_instance_id(self) -> str:
        """The instance id (a request on first call, cached after), with ``also_read``."""
        instance_id = self.read_once(INSTANCE_ID)
        for path in self.also_read:
            # Read now, while nothing is pending, not in the middle of a drain.
            self.read_once_optional(path)
        return instance_id


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


Parser = Callable[[str, str, datetime], Any]


class PathWatcher(Watcher):
    """Polls one path; 404 means nothing pending. ``parse`` may return one, many or none.

    ``without_instance_id``: poll the path even while the instance id cannot be read (a
    termination must not wait for it). A notice found then is keyed on
    :data:`UNKNOWN_INSTANCE`, and keeps the id it was first keyed on for as long as the
    path shows it, so one interruption never becomes two events when the id turns up.
    """

    def __init__(
        self,
        name: str,
        path: str,
        interval: float,
        parse: Parser,
        instance: Instance,
        max_backoff: float = 10.0,
        *,
        without_instance_id: bool = False,
    ) -> None:
        self.name = name
        self.path = path
        self.interval = interval
        self.max_backoff = max(interval, max_backoff)
        self._parse = parse
        self._instance = instance
        self._without_instance_id = without_instance_id
        self._keyed_on: Optional[str] = None
        self._id_failing = False

    def _instance_id(self) -> tuple[str, Optional[MetadataError]]:
        try:
            return self._instance.read_instance_id(), None
        except MetadataError as exc:
            if not (self._without_instance_id and exc.answered):
                raise  # the service itself failed: the path would fail the same way
            return UNKNOWN_INSTANCE, exc

    def poll(self) -> list[Notice]:
        instance_id, id_failure = self._instance_id()
        body = self._instance.client.get(self.path)
        # Said only when the path itself answered: a service that is down is the
        # scheduler's failure to report, not a missing instance id.
        if id_failure is not None and not self._id_failing:
            LOG.warning(
                "%s: instance id unreadable (%s); polling without it", self.name, id_failure
            )
        self._id_failing = id_failure is not None
        if body is None:
            self._keyed_on = None
            return []
        if self._without_instance_id:
            instance_id = self._keyed_on = self._keyed_on or instance_id
        found = self._parse(body, instance_id, self._instance.clock.now())
        if not found:
            self._keyed_on = None
            return []
        return found if isinstance(found, list) else [found]

    def close(self) -> None:
        self._instance.client.close()


InstanceT = TypeVar("InstanceT", bound=Instance)


def reuse(
    instance: Optional[Instance], metadata_url: str, kind: type[InstanceT]
) -> Optional[InstanceT]:
    """The watchers' instance (one token, identity read once) if it serves this metadata URL:
    confirmation reuses it rather than asking a rate-limited service again."""
    if isinstance(instance, kind) and instance.client.base_url == metadata_url.rstrip("/"):
        return instance
    return None


def ask_once(instance: Instance, paths: list[tuple[str, Parser]]) -> Optional[Notice]:
    """The first notice any of ``paths`` shows right now; None when none does or on failure.

    For the shutdown path: one look, bounded by the instance client's timeout per request.
    """
    try:
        try:
            instance_id = instance.read_instance_id()
        except MetadataError:
            instance_id = UNKNOWN_INSTANCE  # a termination must not wait for the id
        for path, parse in paths:
            body = instance.client.get(path)
            if body is None:
                continue
            found = parse(body, instance_id, instance.clock.now())
            found = found if isinstance(found, list) else [found] if found else []
            if found:
                return found[0]  # type: ignore[no-any-return]
    except (MetadataError, ValueError) as exc:
        LOG.info("cannot tell whether an interruption is under way: %s", exc)
    finally:
        instance.client.close()
    return None
