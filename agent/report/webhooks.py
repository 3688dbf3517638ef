"""Webhooks: an HTTP POST when a notice arrives and when it comes to an outcome.

Each ``[[webhooks]]`` endpoint has its own queue and delivery thread (started at its first
event, so an idle agent runs none): the caller only builds the body and queues it, and one
slow or dead receiver delays neither the hooks nor another receiver. An attempt that fails
with a connection error, a timeout, HTTP 429 or 5xx is retried with jittered exponential
backoff until it succeeds or the notice's deadline passes (at least :data:`RETRY_FLOOR`
seconds, so that an outcome told after the deadline still gets its retries). Redirects are
not followed. At exit, :meth:`WebhookReporter.close` gives what is queued ``grace`` seconds.
What is sent is :mod:`agent.report.payload`'s; one receiver's queue, thread and retries are
:mod:`agent.report.delivery`'s.

Webhook URLs and header values carry secrets: logs name an endpoint by its index and host
only, and a filter scrubs the URL's path, query, user info and the header values from the
HTTP library's own debug lines.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlsplit

from agent.report.delivery import Delivery, Endpoint
from agent.report.payload import body, hooks_table
from agent.report.settings import resolve_webhook

if TYPE_CHECKING:  # pragma: no cover
    from agent.hooks.runner import HookResult
    from agent.notice import Notice
    from agent.report.settings import WebhookConfig

LOG = logging.getLogger(__name__)

RETRY_FLOOR = 30.0
"""Seconds an event is retried at least, even when the notice's deadline is nearer or past."""
RESUME_OUTCOMES = ("withdrawn", "resumed")
"""Outcomes whose body lists the resume phase's hooks (the others list the drain's)."""
HTTP_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
)
"""Loggers that may print a request's URL; the redacting filter sits on each."""


class _Redactor(logging.Filter):
    """Replaces every known secret in a record's message with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so that a URL's target goes before its query string.
        self.secrets = sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the logging module's to report
            return True
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


def url_secrets(url: str) -> list[str]:
    """The parts of a webhook URL that may be secret: user info, path and query."""
    parts = urlsplit(url)
    found = [parts.query, parts.username or "", parts.password or ""]
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    if target not in ("", "/"):
        found.append(target)
    return [s for s in found if s]


class WebhookReporter:
    """The ``[[webhooks]]`` sink (a :class:`agent.report.Reporter`).

    Reads the ``env:`` and ``file:`` values of the settings when it is made: raises
    :class:`agent.config.ConfigError` (naming the key) when one cannot be used.
    """

    def __init__(
        self,
        webhooks: Sequence[WebhookConfig],
        max_run_time: float = 600.0,
        *,
        initial_backoff: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        webhooks = [resolve_webhook(i, hook) for i, hook in enumerate(webhooks)]  # ConfigError
        self._cancel = threading.Event()
        self._monotonic = monotonic
        self._now = now
        self._max_run_time = max_run_time
        self._hostname = socket.gethostname()
        self._deadlines: dict[str, datetime] = {}
        self._results: dict[tuple[str, str], dict[str, Any]] = {}
        self._identity: dict[str, str] = {}
        self._lock = threading.Lock()
        self.endpoints = [
            Endpoint(i, hook, self._cancel, initial_backoff, monotonic)
            for i, hook in enumerate(webhooks)
        ]
        secrets: list[str] = []
        for hook in webhooks:
            secrets.extend(url_secrets(hook.url))
            secrets.extend(value for _, value in hook.headers)
        self._redactor = _Redactor(secrets)
        self._filtered = [LOG, *(logging.getLogger(name) for name in HTTP_LOGGERS)]
        for logger in self._filtered:
            logger.addFilter(self._redactor)

    # -- Reporter ---------------------------------------------------------------------------

    def status(self, text: str) -> None:
        pass

    def polled(self, watcher: str, ok: bool) -> None:
        pass

    def identity(self, values: dict[str, str]) -> None:
        """Kept for every body from now on (a notice told before it is sent without)."""
        with self._lock:
            self._identity = dict(values)

    def notice(self, notice: Notice, deadline: datetime) -> None:
        with self._lock:
            self._deadlines[notice.event_id] = deadline
            identity = self._identity
        doc = body("notice", notice, deadline, self._now(), self._hostname, identity=identity)
        self._send("notice", notice, deadline, doc)

    def hook_result(self, notice: Notice, phase: str, result: HookResult) -> None:
        with self._lock:
            self._results.setdefault((notice.event_id, phase), {})[result.hook] = result.to_dict()

    def outcome(self, notice: Notice, outcome: str, record: dict[str, Any]) -> None:
        phase = "resume" if outcome in RESUME_OUTCOMES else "drain"
        recorded = (record or {}).get("hooks", {}).get(phase, {})
        with self._lock:
            results = {**(recorded if isinstance(recorded, dict) else {})}
            results.update(self._results.get((notice.event_id, phase), {}))
            deadline = self._deadlines.get(notice.event_id, notice.deadline)
            identity = self._identity
        detail = ""
        for key in ("confirmation", "withdrawn", "detail"):
            if isinstance((record or {}).get(key), str):
                detail = record[key]
                break
        doc = body(
            "outcome",
            notice,
            deadline,
            self._now(),
            self._hostname,
            outcome=outcome,
            hooks=hooks_table(results),
            detail=detail,
            identity=identity,
        )
        self._send(outcome, notice, deadline, doc)

    def close(self, grace: float) -> None:
        """Wait at most ``grace`` seconds for the queues, then give up what is left."""
        end = self._monotonic() + max(0.0, grace)
        running = [e for e in self.endpoints if e.thread is not None]
        for endpoint in running:
            endpoint.queue.put(None)
        for endpoint in running:
            if endpoint.thread is not None:
                endpoint.thread.join(max(0.0, end - self._monotonic()))
        self._cancel.set()
        for endpoint in running:
            if endpoint.current is not None:
                endpoint.tell(endpoint.current, False, "still trying when the agent exited")
            while True:
                try:
                    left = endpoint.queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    endpoint.tell(left, False, "the agent is exiting")
        if not any(e.thread is not None and e.thread.is_alive() for e in running):
            for logger in self._filtered:  # else a request still runs: keep scrubbing its logs
                logger.removeFilter(self._redactor)

    # -- delivery ---------------------------------------------------------------------------

    def _send(
        self, event: str, notice: Notice, deadline: Optional[datetime], doc: dict[str, Any]
    ) -> None:
        if self._cancel.is_set():
            return
        now, mono = self._now(), self._monotonic()
        if deadline is None:
            deadline = now + timedelta(seconds=self._max_run_time)
        end = max(mono + (deadline - now).total_seconds(), mono + RETRY_FLOOR)
        for endpoint in self.endpoints:
            if not endpoint.wants(event):
                continue
            try:
                data = endpoint.render(doc)
            except Exception as exc:  # a template that fails on this event's values
                LOG.error(
                    "%s: %s event of %s not delivered: the template failed: %s",
                    endpoint.name,
                    doc["event"],
                    notice.event_id,
                    exc,
                )
                continue
            kind = "notice" if event == "notice" else f"outcome ({event})"
            endpoint.put(Delivery(kind, notice.event_id, data, end))
