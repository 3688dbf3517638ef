"""Backoff policies, built on tenacity's wait strategies so no backoff maths is hand-written.

The poll scheduler and the confirmation loop both wait this way; the rate-limited failure
log that goes with them is in :mod:`agent.ratelimit`.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import tenacity

LOG = logging.getLogger(__name__)

StopCheck = Callable[[tenacity.RetryCallState], bool]
WaitStrategy = Callable[[tenacity.RetryCallState], float]


def capped_exponential_wait(initial: float, maximum: float, jitter: float) -> WaitStrategy:
    """A tenacity ``wait=``: ``initial`` doubling per attempt plus up to ``jitter``, never more
    than ``maximum``. Built from waits that every tenacity release has
    (``wait_exponential_jitter``'s arguments differ between 8.x and 9.x)."""
    wait = tenacity.wait_exponential(multiplier=initial, max=maximum) + tenacity.wait_random(
        0, jitter
    )
    return lambda state: min(maximum, float(wait(state)))


class Backoff:
    """Successive delays of a jittered exponential backoff, for loops that are not one call.

    The poll loop cannot wrap a single function in ``tenacity.retry``: a failing watcher must
    wait longer between polls while the others keep their pace. This keeps a per-watcher
    attempt count and asks :func:`capped_exponential_wait` for each delay.
    """

    def __init__(self, initial: float, maximum: float, jitter: float = 0.5) -> None:
        self._wait = capped_exponential_wait(initial, maximum, jitter)
        self._state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        self.failures = 0

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before trying again."""
        self.failures += 1
        self._state.attempt_number = self.failures
        return self._wait(self._state)

    def reset(self) -> None:
        self.failures = 0


def stop_at(monotonic: Callable[[], float], end: float, cancel: threading.Event) -> StopCheck:
    """A tenacity ``stop=`` that ends a retry loop at the monotonic time ``end`` or on cancel.

    Built on the agent's clock rather than tenacity's own ``stop_after_delay``, so that a
    test clock decides when a budget is spent.
    """

    def stop(state: tenacity.RetryCallState) -> bool:
        return cancel.is_set() or monotonic() >= end

    return stop


def sleep_until(
    wait_for: Callable[[threading.Event, float], bool],
    monotonic: Callable[[], float],
    end: float,
    cancel: threading.Event,
) -> Callable[[float], None]:
    """A tenacity ``sleep=`` that never sleeps past ``end`` and wakes at once on cancel.

    Clipping the last wait to the budget gives one more look right at its end instead of
    giving up early.
    """

    def sleep(seconds: float) -> None:
        wait_for(cancel, max(0.0, min(seconds, end - monotonic())))

    return sleep
