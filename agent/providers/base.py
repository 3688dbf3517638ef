"""What a cloud module provides: watchers that turn metadata into notices, and confirmation."""

from __future__ import annotations

import abc
import enum
import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from agent.clock import Clock
    from agent.config import Config
    from agent.notice import Notice


class Watcher(abc.ABC):
    """Polls one metadata source. ``poll`` returns the notices present right now (often none).

    It raises :class:`agent.metadata.MetadataError` (or ValueError for a body it cannot
    read) on a transient failure; the daemon backs off and polls again.
    """

    name: str
    interval: float

    @abc.abstractmethod
    def poll(self) -> list[Notice]: ...


class Verdict(enum.Enum):
    CONFIRMED = "confirmed"
    """The API shows the interruption under way (or done)."""
    WITHDRAWN = "withdrawn"
    """The notice left the metadata service and the API shows the instance unaffected."""
    UNKNOWN = "unknown"
    """No answer either way within the budget (``detail`` says what was last seen)."""


@dataclass(frozen=True)
class Confirmation:
    """What the cloud API said about a notice."""

    verdict: Verdict
    detail: str


API_MODULES = {"aws": "agent.providers.aws_api", "alibaba": "agent.providers.alibaba_api"}
"""Confirmation per cloud, apart from the watchers: they import an SDK, so only on use."""


class Provider(abc.ABC):
    name: str

    @abc.abstractmethod
    def watchers(self, config: Config, clock: Clock) -> list[Watcher]:
        """The enabled watchers for this cloud, built from the config."""

    def preload(self) -> None:
        """Import this cloud's API module (not its SDK) at start: a package upgrade replaces
        the agent's files under the running daemon, and a lazy import could then fail or load
        a mismatched version in the middle of a drain."""
        module = API_MODULES.get(self.name)
        if module is not None:
            importlib.import_module(module)

    def confirm(
        self,
        notice: Notice,
        config: Config,
        clock: Clock,
        budget_end: float,
        *,
        gone: Callable[[], bool] = lambda: False,
        cancel: Optional[threading.Event] = None,
    ) -> Optional[Confirmation]:
        """Ask the cloud API whether ``notice`` is really under way, until ``budget_end``.

        ``budget_end`` is on ``clock.monotonic()``; ``gone()`` tells whether the notice has
        left the metadata service (needed for WITHDRAWN); ``cancel`` ends the wait early.
        None means this provider cannot confirm (no API module, no SDK, no credentials,
        no permission); the metadata signal alone then ends the run.
        """
        module = API_MODULES.get(self.name)
        if module is None:
            return None
        api = importlib.import_module(module)
        result: Optional[Confirmation] = api.confirm(
            self, notice, config, clock, budget_end, gone=gone, cancel=cancel
        )
        return result
