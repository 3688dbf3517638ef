"""Confirmation through a cloud API, the same for every cloud: look, back off, decide.

A cloud's ``looker()`` supplies one function that takes a single look at the instance and
says what it saw; this module repeats it under tenacity (jittered exponential backoff from
about a second up to 20 s) until the answer is decisive or the budget is spent. Time comes
from the agent's clock, so tests can spend a whole budget without waiting.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import tenacity

from agent.backoff import capped_exponential_wait, sleep_until, stop_at
from agent.clock import Clock
from agent.logs import fields
from agent.notice import Notice
from agent.ratelimit import RateLimitedLog

if TYPE_CHECKING:
    from agent.clouds.base import Cloud

LOG = logging.getLogger(__name__)

INITIAL_WAIT = 1.0
MAX_WAIT = 20.0
FAILURE_LOG_EVERY = 30.0


class Transient(Exception):
    """Worth another look after a backoff: throttling, 5xx, network, eventual consistency."""


class Unusable(Exception):
    """Confirmation cannot work here (no SDK, no credentials, no permission): skip it.

    The message is logged once, so it must say what to fix and never carry a secret.
    """


class _Cancelled(Exception):
    pass


class Look(enum.Enum):
    INTERRUPTED = "interrupted"
    """The API shows the interruption under way or done."""
    FINE = "fine"
    """The API shows the instance unaffected; a withdrawal once the notice is gone."""
    PENDING = "pending"
    """Neither yet: look again."""


@dataclass(frozen=True)
class Observation:
    """What one look saw, and how to say it in the log."""

    look: Look
    detail: str


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


def confirm(
    look: Callable[[], Observation],
    notice: Notice,
    clock: Clock,
    budget_end: float,
    *,
    gone: Callable[[], bool],
    cancel: Optional[threading.Event],
    api: str,
) -> Optional[Confirmation]:
    """Look until decisive, cancelled or past ``budget_end``; None when ``look`` is unusable.

    Decisive: INTERRUPTED (CONFIRMED), or FINE while ``gone()`` (WITHDRAWN). There is always
    at least one look, even when the budget was spent before the call.
    """
    cancel = cancel or threading.Event()
    started = clock.monotonic()
    failures = RateLimitedLog(LOG, FAILURE_LOG_EVERY, clock.monotonic)
    looks = 0
    last_detail = ""
    log_fields = fields(NOTICE_ID=notice.event_id, PROVIDER=notice.provider)

    def attempt() -> Observation:
        nonlocal looks, last_detail
        if cancel.is_set():
            raise _Cancelled
        looks += 1
        try:
            seen = look()
        except Transient as exc:
            last_detail = str(exc)
            raise
        failures.recovered("%s answers again", api)
        if seen.detail != last_detail:
            LOG.info("%s: %s", api, seen.detail, extra=log_fields)
        last_detail = seen.detail
        return seen

    def decisive(seen: Observation) -> bool:
        return seen.look is Look.INTERRUPTED or (seen.look is Look.FINE and gone())

    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        if outcome is not None and outcome.failed:
            failures.failure("%s: %s; looking again", api, outcome.exception())

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Transient)
        | tenacity.retry_if_result(lambda seen: not decisive(seen)),
        stop=stop_at(clock.monotonic, budget_end, cancel),
        wait=capped_exponential_wait(INITIAL_WAIT, MAX_WAIT, jitter=INITIAL_WAIT),
        sleep=sleep_until(clock.wait_for, clock.monotonic, budget_end, cancel),
        before_sleep=before_sleep,
        retry_error_callback=lambda state: None,
    )
    try:
        seen = retrying(attempt)
    except Unusable as exc:
        LOG.error(
            "cannot confirm %s through the %s: %s; skipping confirmation",
            notice.event_id,
            api,
            exc,
            extra=log_fields,
        )
        return None
    except _Cancelled:
        seen = None
    took = clock.monotonic() - started
    if seen is None:
        why = "cancelled" if cancel.is_set() else f"no answer within {took:.0f} s"
        return Confirmation(
            Verdict.UNKNOWN, f"{why} ({looks} looks); last: {last_detail or 'nothing'}"
        )
    verdict = Verdict.CONFIRMED if seen.look is Look.INTERRUPTED else Verdict.WITHDRAWN
    return Confirmation(verdict, f"{seen.detail} ({looks} looks in {took:.1f} s)")


def confirm_with(
    cloud: Cloud,
    notice: Notice,
    section: Any,
    clock: Clock,
    budget_end: float,
    *,
    gone: Callable[[], bool],
    cancel: Optional[threading.Event],
) -> Optional[Confirmation]:
    """:func:`confirm` with ``cloud``'s look; None when that cloud cannot confirm."""
    look = cloud.looker(notice, section, clock)
    if look is None:
        return None
    LOG.info(
        "confirming %s %s through the %s (for up to %.0f s)",
        notice.kind,
        notice.event_id,
        cloud.api or f"{cloud.name} API",
        max(0.0, budget_end - clock.monotonic()),
        extra=fields(NOTICE_ID=notice.event_id, KIND=notice.kind),
    )
    return confirm(
        look, notice, clock, budget_end, gone=gone, cancel=cancel, api=cloud.api or cloud.name
    )
