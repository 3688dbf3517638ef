"""What a cloud module provides: watchers that turn metadata into notices, and confirmation."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

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
    WITHDRAWN = "withdrawn"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Confirmation:
    """What the cloud API said about a notice."""

    verdict: Verdict
    detail: str


class Provider(abc.ABC):
    name: str

    @abc.abstractmethod
    def watchers(self, config: Config, clock: Clock) -> list[Watcher]:
        """The enabled watchers for this cloud, built from the config."""

    def confirm(
        self, notice: Notice, config: Config, clock: Clock, budget_end: float
    ) -> Optional[Confirmation]:
        """Ask the cloud API whether ``notice`` is really under way, until ``budget_end``.

        None means this provider cannot confirm; the metadata signal alone then ends the run.
        """
        return None
