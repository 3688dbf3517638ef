"""Prometheus metrics, through prometheus_client (optional: the ``metrics`` extra).

Written to node_exporter's textfile collector (``[metrics] textfile``), atomically, by a
writer thread: at once after a notice, a hook or an outcome, and otherwise at most every
:data:`WRITE_EVERY` seconds while polls go on; never from the poll loop's own thread.
``[metrics] listen`` serves ``/metrics`` from prometheus_client's own server on a daemon
thread. The agent's metrics live in their own registry: no process or platform collectors.
Labels are few and bounded: no event or instance ids.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

from agent import __version__
from agent.notice import KINDS
from agent.report.settings import split_listen
from agent.schema import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from agent.hooks.runner import HookResult
    from agent.notice import Notice

LOG = logging.getLogger(__name__)

WRITE_EVERY = 5.0
"""Seconds between two textfile writes caused by polls alone."""
HOOK_OUTCOMES = ("ok", "failed", "timeout", "skipped", "error")
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
DRAIN_ENDS = ("drained", "failed")
"""Outcomes that end a drain's hooks: preempt_agent_drain_seconds_left is set then."""


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "[metrics] is set but prometheus_client is not installed: install python3-prometheus-"
            "client (Debian, Ubuntu), python3-prometheus_client (Fedora, RHEL), or "
            "pip install 'preempt-agent[metrics]'"
        ) from None
    return prometheus_client


class MetricsReporter:
    """The ``[metrics]`` sink (a :class:`agent.report.Reporter`)."""

    def __init__(
        self,
        provider: str,
        textfile: str = "",
        listen: str = "",
        *,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        write_every: float = WRITE_EVERY,
    ) -> None:
        prom = _client()
        self._prom = prom
        self._now = now
        self._provider = provider
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.notices = prom.Counter(
            "preempt_agent_notices",
            "Interruption notices whose drain started.",
            ["provider", "kind"],
            registry=r,
        )
        self.hook_runs = prom.Counter(
            "preempt_agent_hook_runs",
            "Hook and action runs by outcome.",
            ["hook", "outcome"],
            registry=r,
        )
        self.hook_duration = prom.Histogram(
            "preempt_agent_hook_duration_seconds",
            "How long each hook or action ran.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.metadata_errors = prom.Counter(
            "preempt_agent_metadata_errors",
            "Polls of the metadata service that failed.",
            ["watcher"],
            registry=r,
        )
        self.last_poll = prom.Gauge(
            "preempt_agent_last_poll_timestamp_seconds",
            "Unix time of the last poll the metadata service answered.",
            registry=r,
        )
        self.seconds_left = prom.Gauge(
            "preempt_agent_drain_seconds_left",
            "Seconds that were left to the deadline when the last drain's hooks were over.",
            registry=r,
        )
        self.info = prom.Gauge(
            "preempt_agent_info",
            "Always 1: the agent's version and the cloud it watches.",
            ["version", "provider"],
            registry=r,
        )
        self.info.labels(version=__version__, provider=provider).set(1)
        for kind in KINDS:  # counters start at zero, so rate() sees the first one
            self.notices.labels(provider=provider, kind=kind)
        self._seen_hooks: set[str] = set()
        self._seen_watchers: set[str] = set()
        self._deadlines: dict[str, datetime] = {}
        self._lock = threading.Lock()

        self.textfile = textfile
        self._write_every = write_every
        self._dirty = False
        self._failing = False
        self._urgent = threading.Event()
        self._closed = False
        self._writer: Optional[threading.Thread] = None
        if textfile:
            self._write()  # fail at start, not at the first notice, on a bad directory
            self._writer = threading.Thread(target=self._writes, name="metrics-file", daemon=True)
            self._writer.start()

        self.address: Optional[tuple[str, int]] = None
        self._server: Any = None
        if listen:
            host, port = split_listen(listen)
            try:
                started = prom.start_http_server(port, addr=host, registry=r)
            except OSError as exc:
                raise ConfigError(f"metrics.listen: cannot listen on {listen}: {exc}") from None
            if isinstance(started, tuple):  # prometheus_client >= 0.17: (server, thread)
                self._server = started[0]
                self.address = self._server.server_address[:2]
            LOG.info("serving metrics on http://%s/metrics", listen)

    # -- Reporter ---------------------------------------------------------------------------

    def status(self, text: str) -> None:
        pass

    def polled(self, watcher: str, ok: bool) -> None:
        if watcher not in self._seen_watchers:
            self._seen_watchers.add(watcher)
            self.metadata_errors.labels(watcher=watcher)
        if ok:
            self.last_poll.set(time.time())
        else:
            self.metadata_errors.labels(watcher=watcher).inc()
        self._dirty = True

    def notice(self, notice: Notice, deadline: datetime) -> None:
        with self._lock:
            self._deadlines[notice.event_id] = deadline
        self.notices.labels(provider=notice.provider, kind=notice.kind).inc()
        self._soon()

    def hook_result(self, notice: Notice, phase: str, result: HookResult) -> None:
        if result.hook not in self._seen_hooks:
            self._seen_hooks.add(result.hook)
            for outcome in HOOK_OUTCOMES:
                self.hook_runs.labels(hook=result.hook, outcome=outcome)
        self.hook_runs.labels(hook=result.hook, outcome=result.outcome).inc()
        self.hook_duration.observe(max(0.0, result.duration))
        self._soon()

    def outcome(self, notice: Notice, outcome: str, record: dict[str, Any]) -> None:
        if outcome in DRAIN_ENDS:
            with self._lock:
                deadline = self._deadlines.get(notice.event_id, notice.deadline)
            if deadline is not None:
                left = (deadline - self._now()).total_seconds()
                self.seconds_left.set(max(0.0, left))
        self._soon()

    def close(self, grace: float) -> None:
        self._closed = True
        self._urgent.set()
        if self._writer is not None:
            self._writer.join(max(0.0, grace))
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- the textfile ------------------------------------------------------------------------

    def _soon(self) -> None:
        self._dirty = True
        self._urgent.set()

    def _writes(self) -> None:
        while not self._closed:
            self._urgent.wait(self._write_every)
            self._urgent.clear()
            if self._dirty or self._closed:
                self._write()

    def _write(self) -> None:
        self._dirty = False
        try:
            self._prom.write_to_textfile(self.textfile, self.registry)
        except OSError as exc:
            if self._writer is None:
                problem = f"metrics.textfile: cannot write {self.textfile}: {exc}"
                raise ConfigError(problem) from None
            if not self._failing:  # once until it works again: not every few seconds
                LOG.warning("cannot write metrics to %s: %s", self.textfile, exc)
            self._failing = True
            return
        if self._failing:
            LOG.info("metrics written to %s again", self.textfile)
        self._failing = False
