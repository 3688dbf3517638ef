"""Webhooks: an HTTP POST when a notice arrives and when it comes to an outcome.

Each ``[[webhooks]]`` endpoint has its own queue and delivery thread (started at its first
event, so an idle agent runs none): the caller only builds the body and queues it, and one
slow or dead receiver delays neither the hooks nor another receiver. An attempt that fails
with a connection error, a timeout, HTTP 429 or 5xx is retried with jittered exponential
backoff until it succeeds or the notice's deadline passes (at least :data:`RETRY_FLOOR`
seconds, so that an outcome told after the deadline still gets its retries). Redirects are
not followed. At exit, :meth:`WebhookReporter.close` gives what is queued ``grace`` seconds.

Webhook URLs and header values carry secrets: logs name an endpoint by its index and host
only, and a filter scrubs the URL's path, query, user info and the header values from the
HTTP library's own debug lines.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlsplit

import requests
import tenacity

from agent import __version__
from agent.backoff import capped_exponential_wait, sleep_until, stop_at
from agent.clock import utc_rfc3339
from agent.config import resolve_webhook
from agent.logs import fields

if TYPE_CHECKING:  # pragma: no cover
    from agent.config import WebhookConfig
    from agent.hooks.runner import HookResult
    from agent.notice import Notice

LOG = logging.getLogger(__name__)

RETRY_FLOOR = 30.0
"""Seconds an event is retried at least, even when the notice's deadline is nearer or past."""
MAX_BACKOFF = 30.0
"""Longest wait between two attempts, seconds."""
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


class _Retryable(Exception):
    """The receiver answered 429 or 5xx: worth another attempt."""


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


def describe(index: int, url: str) -> str:
    """How logs name an endpoint: ``webhooks[0] (https://host)``, nothing secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"webhooks[{index}] ({parts.scheme}://{host}{port})"


def seconds_left(deadline: Optional[datetime], now: datetime) -> Optional[int]:
    if deadline is None:
        return None
    return max(0, math.floor((deadline - now).total_seconds()))


def hooks_table(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: result}`` with each result as HookResult.to_dict() minus the repeated name."""
    return {
        name: {k: v for k, v in result.items() if k != "hook"}
        for name, result in results.items()
        if isinstance(result, dict)
    }


def body(
    event: str,
    notice: Notice,
    deadline: Optional[datetime],
    now: datetime,
    hostname: str,
    outcome: Optional[str] = None,
    hooks: Optional[dict[str, Any]] = None,
    detail: str = "",
) -> dict[str, Any]:
    """The JSON document of one event (the README lists its keys)."""
    doc: dict[str, Any] = {
        "event": event,
        "provider": notice.provider,
        "kind": notice.kind,
        "action": notice.action,
        "instance_id": notice.instance_id,
        "event_id": notice.event_id,
        "deadline": utc_rfc3339(deadline) if deadline else None,
        "seconds_left": seconds_left(deadline, now),
        "time": utc_rfc3339(now),
        "hostname": hostname,
        "agent_version": __version__,
    }
    for key in ("region", "zone", "instance_type"):  # when the cloud's watcher knows them
        value = getattr(notice, key, None)
        if value:
            doc[key] = value
    if event == "outcome":
        doc["outcome"] = outcome
        doc["hooks"] = hooks or {}
        if detail:
            doc["detail"] = detail
    return doc


def chat_text(doc: dict[str, Any]) -> str:
    """One line for a chat channel (``format = "slack"``)."""
    where = f"{doc['instance_id']} ({doc['hostname']}, {doc['provider']})"
    left = "" if doc["seconds_left"] is None else f", {doc['seconds_left']} s left"
    if doc["event"] == "notice":
        deadline = doc["deadline"] or "no deadline given"
        return f"{doc['kind']} ({doc['action']}) on {where}: draining, deadline {deadline}{left}"
    hooks = ", ".join(
        f"{name} {r.get('outcome')} ({float(r.get('duration') or 0):.1f} s)"
        for name, r in doc["hooks"].items()
    )
    detail = f": {doc['detail']}" if doc.get("detail") else ""
    return f"{doc['kind']} on {where}: {doc['outcome']}{detail}; hooks: {hooks or 'none'}"


@dataclass
class _Delivery:
    event: str
    event_id: str
    data: bytes
    end: float  # monotonic time after which no attempt starts
    attempts: int = 0
    told: bool = False  # its fate has been logged
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Endpoint:
    """One receiver: its queue, its thread, its session."""

    def __init__(
        self,
        index: int,
        config: WebhookConfig,
        cancel: threading.Event,
        initial_backoff: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.index = index
        self.config = config
        self.name = describe(index, config.url)
        self.queue: queue.Queue[Optional[_Delivery]] = queue.Queue()
        self.thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self.current: Optional[_Delivery] = None
        self._cancel = cancel
        self._initial = initial_backoff
        self._monotonic = monotonic
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"preempt-agent/{__version__}",
            **dict(config.headers),
        }
        # An Authorization header of the config wins over user info in the URL, which
        # requests would otherwise turn into Basic auth on top of it.
        explicit = any(name.lower() == "authorization" for name, _ in config.headers)
        self._auth: Any = (lambda request: request) if explicit else None
        self._template: Any = None
        if config.format == "template":
            from jinja2.sandbox import SandboxedEnvironment

            self._template = SandboxedEnvironment().from_string(config.template)

    def wants(self, event: str) -> bool:
        return event in self.config.events

    def render(self, doc: dict[str, Any]) -> bytes:
        if self.config.format == "slack":
            return json.dumps({"text": chat_text(doc)}).encode()
        if self._template is not None:
            return str(self._template.render(payload=doc, text=chat_text(doc), **doc)).encode()
        return json.dumps(doc, sort_keys=True).encode()

    def put(self, delivery: _Delivery) -> None:
        with self._start_lock:  # the loop and a run worker may both send a first event
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name=f"webhook-{self.index}", daemon=True
                )
                self.thread.start()
        self.queue.put(delivery)

    def _run(self) -> None:
        session = requests.Session()
        try:
            while True:
                delivery = self.queue.get()
                if delivery is None:
                    return
                self.current = delivery
                self._deliver(session, delivery)
                self.current = None
        finally:
            session.close()

    def _attempt(self, session: requests.Session, delivery: _Delivery) -> int:
        delivery.attempts += 1
        timeout = max(0.1, min(self.config.timeout, delivery.end - self._monotonic()))
        with session.post(
            self.config.url,
            data=delivery.data,
            headers=self._headers,
            auth=self._auth,
            timeout=timeout,
            allow_redirects=False,
        ) as response:
            code = response.status_code
        if code == 429 or code >= 500:
            raise _Retryable(f"HTTP {code}")
        return code

    def _deliver(self, session: requests.Session, delivery: _Delivery) -> None:
        if self._cancel.is_set():
            self.tell(delivery, False, "the agent is exiting")
            return
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(
                (_Retryable, requests.ConnectionError, requests.Timeout)
            ),
            stop=stop_at(self._monotonic, delivery.end, self._cancel),
            wait=capped_exponential_wait(self._initial, MAX_BACKOFF, self._initial),
            sleep=sleep_until(lambda e, s: e.wait(s), self._monotonic, delivery.end, self._cancel),
            reraise=True,
        )
        try:
            code = retrying(self._attempt, session, delivery)
        except _Retryable as exc:
            self.tell(delivery, False, f"the receiver kept answering {exc}")
        except requests.Timeout:
            self.tell(delivery, False, "timed out")
        except requests.ConnectionError as exc:
            self.tell(delivery, False, f"cannot connect: {_reason(exc)}")
        except requests.RequestException as exc:
            self.tell(delivery, False, f"{type(exc).__name__}: {_reason(exc)}")
        else:
            if 200 <= code < 300:
                self.tell(delivery, True, f"HTTP {code}")
            elif 300 <= code < 400:
                self.tell(delivery, False, f"HTTP {code}: redirects are not followed")
            else:
                self.tell(delivery, False, f"HTTP {code}")

    def tell(self, delivery: _Delivery, ok: bool, how: str) -> None:
        """Log a delivery's fate, once whatever happens."""
        with delivery.lock:
            if delivery.told:
                return
            delivery.told = True
        tries = f"{delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}"
        log_fields = fields(NOTICE_ID=delivery.event_id, OUTCOME="sent" if ok else "not-sent")
        if ok:
            LOG.info(
                "%s: %s event of %s delivered (%s, %s)",
                self.name,
                delivery.event,
                delivery.event_id,
                how,
                tries,
                extra=log_fields,
            )
        else:
            LOG.warning(
                "%s: %s event of %s not delivered: %s (%s)",
                self.name,
                delivery.event,
                delivery.event_id,
                how,
                tries,
                extra=log_fields,
            )


def _reason(exc: BaseException) -> str:
    """The underlying cause of a requests error, short (the redacting filter scrubs it)."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    inner = getattr(inner, "reason", None) or inner  # urllib3's MaxRetryError names the URL
    text = str(inner)
    if text.startswith("<") and ">: " in text:  # "<HTTPConnection object at 0x..>: Failed ..."
        text = text.split(">: ", 1)[1]
    return text[:200]


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
        self._lock = threading.Lock()
        self.endpoints = [
            _Endpoint(i, hook, self._cancel, initial_backoff, monotonic)
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

    def notice(self, notice: Notice, deadline: datetime) -> None:
        with self._lock:
            self._deadlines[notice.event_id] = deadline
        doc = body("notice", notice, deadline, self._now(), self._hostname)
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
            endpoint.put(_Delivery(kind, notice.event_id, data, end))
