"""What a cloud package provides: watchers that turn metadata into notices, one look at the
instance through the cloud's API, its config section, detection evidence and mock flavour.

The core only sees these two classes; every quirk of a cloud stays in its package.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

if TYPE_CHECKING:
    from agent.clock import Clock
    from agent.confirmation import Observation
    from agent.mock.flavor import MockCloud
    from agent.notice import Notice


class Watcher(abc.ABC):
    """Polls one metadata source. ``poll`` returns the notices present right now (often none).

    It raises :class:`~agent.clouds._shared.token_client.MetadataError` (or ValueError for a
    body it cannot read) on a transient failure; the scheduler backs off and polls again.
    """

    name: str
    """Names the watcher in logs and status: ``<cloud>-<source>``."""
    interval: float
    """Seconds between polls (a hanging-GET watcher: the pause before it asks again)."""
    max_backoff: float
    """The longest wait after failures; a Retry-After is capped by it too."""

    @abc.abstractmethod
    def poll(self) -> list[Notice]: ...

    def close(self) -> None:  # noqa: B027 - optional, nothing to release by default
        """Release connections; the watcher is not polled again."""


DmiTest = Callable[[str], bool]


@dataclass(frozen=True)
class DmiRule:
    """One piece of detection evidence: a file under the sysfs root and a test of its text."""

    file: str
    """Relative to the sysfs root, e.g. ``class/dmi/id/sys_vendor``."""
    test: DmiTest


@dataclass(frozen=True)
class MetadataProbe:
    """A request only this cloud's metadata service answers with 200 and a non-empty body.

    Asked only when DMI says nothing; it must change nothing on the instance. The body may
    be a token, so only the status is ever logged.
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "PUT"
    what: str = "token endpoint"
    """How the evidence names what answered: ``<cloud> <what> <url> answered``."""


IDENTITY_KEYS = ("region", "zone", "instance_type")
"""The keys :meth:`Cloud.identity` may give, in the order webhooks list them."""
MAX_IDENTITY_VALUE = 128
"""Longer identity values are dropped: no real region, zone or type comes close."""


def identity_values(**values: Optional[str]) -> dict[str, str]:
    """The identity keys (:data:`IDENTITY_KEYS`) whose values are usable: stripped, non-empty,
    printable and short. Anything else (None, blank, a control character, a page of HTML
    from something that is not the metadata service) is left out rather than sent."""
    found: dict[str, str] = {}
    for key in IDENTITY_KEYS:
        value = values.get(key)
        if not isinstance(value, str):
            continue
        value = value.strip()
        if value and len(value) <= MAX_IDENTITY_VALUE and value.isprintable():
            found[key] = value
    return found


class Cloud(abc.ABC):
    """One cloud, registered once in :mod:`agent.clouds`."""

    name: ClassVar[str]
    """The registry key, the config section's name and the notices' ``provider``."""
    section: ClassVar[type]
    """Frozen dataclass of the ``[<name>]`` config section (every field defaulted)."""
    api: ClassVar[str] = ""
    """The cloud API confirmation asks, as logs name it ("EC2 API")."""
    dmi: ClassVar[tuple[DmiRule, ...]] = ()
    """Evidence that this machine runs on this cloud; any one rule is enough."""
    mock_module: ClassVar[str] = ""
    """The module whose ``MOCK`` is this cloud's mock flavour, imported only when asked."""

    @abc.abstractmethod
    def watchers(self, section: Any, clock: Clock) -> list[Watcher]:
        """The enabled watchers, built from this cloud's config section."""

    def preload(self) -> None:  # noqa: B027 - a cloud without an API module has nothing to load
        """Import this cloud's API module (not its SDK) at start: a package upgrade replaces
        the agent's files under the running daemon, and a lazy import could then fail or load
        a mismatched version in the middle of a drain."""

    def looker(
        self, notice: Notice, section: Any, clock: Clock
    ) -> Optional[Callable[[], Observation]]:
        """One look at the instance through the cloud API (SDK imported lazily inside);
        None = this cloud cannot confirm. The look raises Transient or Unusable."""
        return None

    def actions(self, config: Any) -> list[Any]:
        """The built-in drain actions (:class:`agent.actions.Action`) the config turns on."""
        return []

    def after_drain(self, notice: Notice, section: Any, clock: Clock) -> bool:
        """Once a drain is over, before any confirmation: tell the platform it may go ahead
        (Azure's event approval). Never raises; True when the platform took it."""
        return False

    def interrupted_now(self, section: Any, clock: Clock, timeout: float) -> Optional[Notice]:
        """Shutdown path: ask once, within ``timeout``, whether a termination is under way."""
        return None

    def identity(self, section: Any, clock: Clock) -> dict[str, str]:
        """Where and what this instance is, for the fleet's webhooks: some of ``region``,
        ``zone`` and ``instance_type`` (:data:`IDENTITY_KEYS`), only those the cloud's
        metadata gives cheaply (a value already read, or one or two short requests).

        Read once, at start, from a background thread after READY: it must never delay a
        poll or a drain. Never raises (a failure is logged and gives fewer keys, or none);
        bounded in time by the section's request timeout (a few requests at most). Values go
        through :func:`identity_values`. The default: nothing known.
        """
        return {}

    def probe(self, section: Any) -> Optional[MetadataProbe]:
        """The metadata request that tells this cloud apart when DMI has no evidence."""
        return None

    def mock(self) -> Optional[MockCloud]:
        """This cloud's flavour of the mock metadata service, for ``demo`` and tests."""
        if not self.mock_module:
            return None
        return importlib.import_module(self.mock_module).MOCK
