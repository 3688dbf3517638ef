"""Telling the fleet: what the agent is doing and what became of each notice.

The core calls one :class:`Reporter`, a fan-out of the configured sinks: the runtime file that
``preempt-agent status`` reads (always), webhooks (``[[webhooks]]``) and Prometheus metrics
(``[metrics]``). A sink never raises into the caller and never waits on the network in the
caller's thread: a slow receiver must not delay a hook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from threading import Thread
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from agent.clock import Clock
    from agent.clouds.base import Cloud
    from agent.config import Config
    from agent.hooks.runner import HookResult
    from agent.notice import Notice

LOG = logging.getLogger(__name__)

OUTCOMES = ("drained", "confirmed", "not-confirmed", "withdrawn", "resumed", "failed")
"""What :meth:`Reporter.outcome` is told a notice came to."""

CLOSE_GRACE = 5.0
"""Seconds :meth:`Reporter.close` may take at exit to deliver what is still queued."""


class Reporter:
    """Receives what happens; every method is optional (a no-op here) and never raises."""

    def status(self, text: str) -> None:
        """What the agent is doing, as it tells systemd (STATUS=)."""

    def identity(self, values: dict[str, str]) -> None:
        """Where and what this instance is (``region``, ``zone``, ``instance_type``, those
        the cloud gives): told once, soon after start, from a background thread."""

    def polled(self, watcher: str, ok: bool) -> None:
        """One poll of ``watcher`` is over; ``ok`` is False when metadata failed to answer."""

    def notice(self, notice: Notice, deadline: datetime) -> None:
        """A drain of ``notice`` starts now; ``deadline`` is the one its run works to."""

    def hook_result(self, notice: Notice, phase: str, result: HookResult) -> None:
        """One hook (or ``action:<name>``) of the ``phase`` of ``notice`` is over."""

    def outcome(self, notice: Notice, outcome: str, record: dict[str, Any]) -> None:
        """What ``notice`` came to (one of :data:`OUTCOMES`); ``record`` is its state record."""

    def close(self, grace: float) -> None:
        """At exit: deliver what is queued within ``grace`` seconds, then stop."""


class FanOut(Reporter):
    """Passes every call to each sink in turn; a sink that raises is logged and skipped."""

    def __init__(self, sinks: Sequence[Reporter]) -> None:
        self.sinks = list(sinks)

    def _each(self, method: str, *args: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args)
            except Exception:  # a reporting bug must never stop a drain
                LOG.exception("%s reporter failed in %s", type(sink).__name__, method)

    def status(self, text: str) -> None:
        self._each("status", text)

    def identity(self, values: dict[str, str]) -> None:
        for sink in self.sinks:  # a sink that has no use for it need not have the method
            if hasattr(sink, "identity"):
                try:
                    sink.identity(dict(values))
                except Exception:  # a reporting bug must never stop a drain
                    LOG.exception("%s reporter failed in identity", type(sink).__name__)

    def polled(self, watcher: str, ok: bool) -> None:
        self._each("polled", watcher, ok)

    def notice(self, notice: Notice, deadline: datetime) -> None:
        self._each("notice", notice, deadline)

    def hook_result(self, notice: Notice, phase: str, result: HookResult) -> None:
        self._each("hook_result", notice, phase, result)

    def outcome(self, notice: Notice, outcome: str, record: dict[str, Any]) -> None:
        self._each("outcome", notice, outcome, record)

    def close(self, grace: float) -> None:
        self._each("close", grace)


def tell_identity(cloud: Cloud, section: Any, clock: Clock, reporter: Reporter) -> Thread:
    """Start a daemon thread that asks ``cloud`` for the instance's identity once and tells
    ``reporter``: nothing waits for it (READY, the polls and drains go on meanwhile), and a
    failure is logged once. Returns the thread (tests join it)."""

    def run() -> None:
        try:
            values = cloud.identity(section, clock)
            if values:
                shown = ", ".join(f"{key} {value}" for key, value in values.items())
                LOG.info("instance identity: %s", shown)
            else:
                LOG.info("instance identity: the metadata gives none; webhooks carry hostname")
            reporter.identity(values)
        except Exception:  # Cloud.identity never raises; a bug must not kill the agent
            LOG.exception("reading the instance identity failed; webhooks carry hostname only")

    thread = Thread(target=run, name="identity", daemon=True)
    thread.start()
    return thread


def build(config: Config, state_dir: Path, cloud: str) -> Reporter:
    """The configured sinks behind one :class:`Reporter`.

    Raises :class:`agent.config.ConfigError` when a webhook's ``env:``/``file:`` secret cannot
    be read (or its file is readable by others), when metrics are configured but
    prometheus_client is not installed, or when the metrics address cannot be bound: a start-up
    error (exit 78), not a silent gap in what the fleet hears.
    """
    from agent.report.runtime import StatusReporter

    sinks: list[Reporter] = [StatusReporter(state_dir, cloud)]
    if config.metrics.textfile or config.metrics.listen:
        from agent.report.metrics import MetricsReporter

        sinks.append(MetricsReporter(cloud, config.metrics.textfile, config.metrics.listen))
    if config.webhooks:
        from agent.report.webhooks import WebhookReporter

        sinks.append(WebhookReporter(config.webhooks, max_run_time=config.max_run_time))
    return FanOut(sinks)
