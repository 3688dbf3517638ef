"""What makes the mock metadata service one cloud's: its headers, and the usual paths.

Each cloud package's ``mock`` module defines a :class:`MockCloud`; the generic server in
:mod:`agent.mock.server` knows no cloud.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from agent.mock.server import MockMetadataServer


@dataclass(frozen=True)
class Flavor:
    """The header names and status codes that differ between metadata services."""

    name: str
    ttl_header: Optional[str]
    """The token PUT's lifetime header; None = a service without session tokens."""
    token_header: Optional[str]
    """The header every GET carries the token in; None = no token checked."""
    missing_token_status: int = 401
    """The answer to a GET without a token."""
    token_path: str = "/latest/api/token"  # noqa: S105 - a path
    required_headers: dict[str, str] = field(default_factory=dict)
    """Headers every request must carry (e.g. a flavour header), checked before the token."""
    missing_header_status: int = 403
    response_headers: dict[str, str] = field(default_factory=dict)
    """Headers on every metadata answer."""


Defaults = Callable[..., None]
"""``defaults(server, instance_id=..., region=...)``: fill in the identity paths."""
SpotNotice = Callable[["MockMetadataServer", datetime, float], str]
"""``spot_notice(server, deadline, at)``: make a spot notice appear once the server's clock
reaches ``at``; returns the path it appears at."""


@dataclass(frozen=True)
class MockCloud:
    """One cloud's flavour of the mock: for ``preempt-agent demo`` and the tests."""

    flavor: Flavor
    defaults: Defaults
    spot_notice: SpotNotice
    watcher: str = "spot"
    """The config table (``[<cloud>.<watcher>]``) of the watcher that sees ``spot_notice``."""
    server: Optional[Callable[..., MockMetadataServer]] = None
    """The server class, when the cloud needs more than the generic one (same signature as
    :class:`~agent.mock.server.MockMetadataServer`); None = the generic one."""

    def make_server(self, **kwargs: Any) -> MockMetadataServer:
        """A server of this flavour (not started): ``host``, ``port``, ``token_required``,
        ``clock`` as :class:`~agent.mock.server.MockMetadataServer` takes them."""
        from agent.mock.server import MockMetadataServer

        return (self.server or MockMetadataServer)(self.flavor, **kwargs)


def rfc3339(dt: datetime) -> str:
    """UTC, whole seconds, ``Z`` suffix: the way the clouds write times. Naive means UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
