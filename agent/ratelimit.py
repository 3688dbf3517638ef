"""A log that says each recurring failure once in a while, not once per attempt."""

from __future__ import annotations

import logging
from typing import Callable


class RateLimitedLog:
    """Logs each kind of recurring failure at most once per ``every`` seconds, counting the rest.

    A metadata service that is down for minutes would otherwise write a line per poll; a
    failure of a new kind (refused connections turning into garbage bodies) is logged at once.
    """

    def __init__(self, logger: logging.Logger, every: float, monotonic: Callable[[], float]):
        self._log = logger
        self._every = every
        self._monotonic = monotonic
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.failing = False

    def failure(self, msg: str, *args: object, key: str = "") -> None:
        now = self._monotonic()
        self.failing = True
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar failures not logged)"
            args = (*args, suppressed)
        self._log.warning(msg, *args)
        self._last[key] = now

    def recovered(self, msg: str, *args: object) -> None:
        if self.failing:
            self._log.info(msg, *args)
        self.failing = False
        self._last.clear()
        self._suppressed.clear()
