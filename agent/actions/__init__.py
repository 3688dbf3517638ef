"""Built-in drain actions: leave the load balancer, complete the Auto Scaling lifecycle.

An action is a step of the drain like a hook, but done in the agent through the cloud API
with the same credentials, region and backoff as confirmation. It runs under the run's
deadline, says what it did as a :class:`HookResult` named ``action:<name>``, and never ends
the drain: whatever goes wrong (no permission, an API that stays down, a budget that runs
out) is an ``error`` result and the drain goes on. ``resume`` undoes what ``drain`` did
when the notice is withdrawn. In a dry run an action says what it would do and calls no
API.
"""

from __future__ import annotations

import abc
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, TypeVar

import tenacity

from agent.backoff import capped_exponential_wait, sleep_until, stop_at
from agent.clock import Clock, utc_rfc3339
from agent.confirmation import Transient, Unusable
from agent.hooks.runner import ERROR, OK, SKIPPED, HookResult
from agent.logs import fields
from agent.notice import Notice
from agent.ratelimit import RateLimitedLog

LOG = logging.getLogger(__name__)

BEFORE, AFTER = "before", "after"
"""Stages: before the user's hooks (stop traffic first) or after them (complete last)."""
INITIAL_WAIT = 1.0
MAX_WAIT = 20.0
FAILURE_LOG_EVERY = 30.0

T = TypeVar("T")
C = TypeVar("C")


@dataclass(frozen=True)
class ActionContext:
    """What one drain or resume gives an action: the notice, its phase and time budget."""

    notice: Notice
    phase: str
    end: Callable[[], float]
    """The monotonic time by which the whole run must be over (may move earlier)."""
    clock: Clock
    dry_run: bool
    cancel: threading.Event
    config: Any


class Failed(Exception):
    """This step of the action did not succeed; the message says why (never a secret)."""


class Action(abc.ABC):
    """One built-in action. Subclasses implement :meth:`_drain`, :meth:`_resume` and
    :meth:`plan`; the public methods add timing, logging, dry runs and error results."""

    name: str = ""
    stage: str = BEFORE
    kinds: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._said: set[str] = set()

    # -- what subclasses provide ------------------------------------------------------------

    @abc.abstractmethod
    def plan(self, ctx: ActionContext) -> str:
        """What :meth:`drain` or :meth:`resume` would do, in words (dry runs, ``check``)."""

    @abc.abstractmethod
    def _drain(self, ctx: ActionContext) -> tuple[str, str]:
        """Do the drain step; return (outcome, detail). Raise Failed or Unusable."""

    def _resume(self, ctx: ActionContext) -> tuple[str, str]:
        return SKIPPED, "nothing to undo"

    def describe(self) -> str:
        """One line for ``check``: what this action does when a notice comes."""
        return self.name

    def handles(self, notice: Notice) -> bool:
        return notice.kind in self.kinds

    # -- what the run calls -----------------------------------------------------------------

    def begin(self, ctx: ActionContext) -> None:  # noqa: B027 - optional, most need none
        """Called when a drain starts, before any hook (a heartbeat thread starts here)."""

    def end(self) -> None:  # noqa: B027 - optional, most need none
        """Called when the drain is over, whatever happened."""

    def drain(self, ctx: ActionContext) -> HookResult:
        return self._run(ctx, self._drain)

    def resume(self, ctx: ActionContext) -> HookResult:
        return self._run(ctx, self._resume)

    @property
    def hook_name(self) -> str:
        return f"action:{self.name}"

    def _run(
        self, ctx: ActionContext, step: Callable[[ActionContext], tuple[str, str]]
    ) -> HookResult:
        started_at = utc_rfc3339(ctx.clock.now())
        started = ctx.clock.monotonic()
        log_fields = fields(
            HOOK=self.hook_name,
            NOTICE_ID=ctx.notice.event_id,
            KIND=ctx.notice.kind,
            PHASE=ctx.phase,
        )
        if not self.handles(ctx.notice):
            outcome, detail = SKIPPED, f"not an action for {ctx.notice.kind}"
        elif ctx.cancel.is_set():
            outcome, detail = SKIPPED, "run cancelled"
        elif ctx.dry_run:
            outcome, detail = OK, f"dry run: would {self.plan(ctx)}"
        else:
            LOG.info("%s: starting (%s)", self.hook_name, ctx.phase, extra=log_fields)
            try:
                outcome, detail = step(ctx)
            except (Failed, Unusable, Transient) as exc:
                outcome, detail = ERROR, str(exc)
            except Exception as exc:  # a bug or an SDK surprise: this action only
                LOG.exception("%s: unexpected error", self.hook_name, extra=log_fields)
                outcome, detail = ERROR, f"unexpected error: {type(exc).__name__}: {exc}"
            if outcome != OK and ctx.cancel.is_set():
                outcome, detail = SKIPPED, f"run cancelled ({detail})"
        duration = round(ctx.clock.monotonic() - started, 3)
        level = logging.INFO if outcome in (OK, SKIPPED) else logging.ERROR
        if outcome == ERROR and detail in self._said:
            level = logging.WARNING  # the same refusal again: said once as an error already
        self._said.add(detail)
        LOG.log(
            level,
            "%s: %s%s after %.1f s",
            self.hook_name,
            outcome,
            f" ({detail})" if detail else "",
            duration,
            extra={**log_fields, "OUTCOME": outcome},
        )
        return HookResult(self.hook_name, outcome, None, started_at, duration, detail)


class CloudAction(Action, Generic[C]):
    """An action turned on by a table of its cloud's section (``[aws.elb]``): :meth:`build`
    makes it when :meth:`wanted` says that table asks for it, with the cloud's section and
    the table, and :meth:`api` makes its API client (:meth:`_connect`) on first use."""

    cloud: str = ""
    """The cloud's config section (``aws``)."""
    table: str = ""
    """The key of this action's table in that section (``elb``)."""

    def __init__(self, cloud: Any, settings: Any) -> None:
        super().__init__()
        self._cloud = cloud
        self._settings = settings
        self._api: Optional[C] = None

    @classmethod
    def build(cls, config: Any) -> list[Action]:
        """``[the action]`` when the configuration turns it on, else ``[]``."""
        cloud = section(config, cls.cloud)
        settings = getattr(cloud, cls.table, None)
        return [cls(cloud, settings)] if settings is not None and cls.wanted(settings) else []

    @classmethod
    @abc.abstractmethod
    def wanted(cls, settings: Any) -> bool:
        """Whether the table's settings turn the action on."""

    @abc.abstractmethod
    def _connect(self, ctx: ActionContext) -> C:
        """A new API client, on the credentials and region of the cloud's confirmation."""

    def api(self, ctx: ActionContext) -> C:
        if self._api is None:
            self._api = self._connect(ctx)
        return self._api


class Retrier:
    """Calls into a cloud API with the agent's backoff until a budget ends.

    Throttling, 5xx and network errors (:class:`Transient`) are retried with jittered
    exponential backoff on the agent's clock, logged at most every 30 s; anything else
    (:class:`Unusable`: no permission, no credentials, a bad name) goes up at once. When the
    budget or the run ends, the last transient error goes up as :class:`Failed`.
    """

    def __init__(self, ctx: ActionContext, api: str) -> None:
        self._ctx = ctx
        self._api = api
        self._log = RateLimitedLog(LOG, FAILURE_LOG_EVERY, ctx.clock.monotonic)

    def __call__(self, call: Callable[[], T], until: Optional[float] = None) -> T:
        ctx = self._ctx
        end = ctx.end() if until is None else min(until, ctx.end())
        log = self._log

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            if outcome is not None and outcome.failed:
                log.failure("%s: %s; trying again", self._api, outcome.exception())

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
            stop=stop_at(ctx.clock.monotonic, end, ctx.cancel),
            wait=capped_exponential_wait(INITIAL_WAIT, MAX_WAIT, jitter=INITIAL_WAIT),
            sleep=sleep_until(ctx.clock.wait_for, ctx.clock.monotonic, end, ctx.cancel),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result = retrying(call)
        except Transient as exc:
            why = "run cancelled" if ctx.cancel.is_set() else "gave up at the end of its time"
            raise Failed(f"{exc} ({why})") from None
        log.recovered("%s answers again", self._api)
        return result


def build(config: Any, cloud: Any) -> list[Action]:
    """The actions the configuration turns on for ``cloud`` (its ``actions(config)``)."""
    make = getattr(cloud, "actions", None)
    return list(make(config)) if callable(make) else []


def section(config: Any, name: str) -> Any:
    """A cloud's config section, by the registry when the config has one."""
    getter = getattr(config, "section", None)
    return getter(name) if callable(getter) else getattr(config, name)


def name_list(name: str, raw: Any, errors: list[str]) -> Optional[tuple[str, ...]]:
    """A TOML array of non-empty strings; one string counts as a list of one."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        errors.append(f"{name}: expected a list of names, got {raw!r}")
        return None
    return tuple(v.strip() for v in items)


def names(default: tuple[str, ...], doc: str) -> Any:
    """A config field holding a list of names (target groups, load balancers)."""
    return field(default=default, metadata={"convert": name_list, "doc": doc})
