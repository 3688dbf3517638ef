"""One webhook receiver: its queue, its delivery thread, its retries.

An event is queued by :class:`agent.report.webhooks.WebhookReporter` and posted here, on a
thread of the receiver's own started at its first event. An attempt that fails with a
connection error, a timeout, HTTP 429 or 5xx is retried with jittered exponential backoff
until it succeeds or its end passes; redirects are not followed. Each delivery's fate is
logged once.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlsplit

import requests
import tenacity

from agent import __version__
from agent.backoff import capped_exponential_wait, sleep_until, stop_at
from agent.logs import fields
from agent.report.payload import chat_text

if TYPE_CHECKING:  # pragma: no cover
    from agent.report.settings import WebhookConfig

LOG = logging.getLogger("agent.report.webhooks")
"""The webhooks' logger: its lines keep that name, and the reporter's redacting filter."""

MAX_BACKOFF = 30.0
"""Longest wait between two attempts, seconds."""


class _Retryable(Exception):
    """The receiver answered 429 or 5xx: worth another attempt."""


def describe(index: int, url: str) -> str:
    """How logs name an endpoint: ``webhooks[0] (https://host)``, nothing secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"webhooks[{index}] ({parts.scheme}://{host}{port})"


@dataclass
class Delivery:
    event: str
    event_id: str
    data: bytes
    end: float  # monotonic time after which no attempt starts
    attempts: int = 0
    told: bool = False  # its fate has been logged
    lock: threading.Lock = field(default_factory=threading.Lock)


class Endpoint:
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
        self.queue: queue.Queue[Optional[Delivery]] = queue.Queue()
        self.thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self.current: Optional[Delivery] = None
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

    def put(self, delivery: Delivery) -> None:
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

    def _attempt(self, session: requests.Session, delivery: Delivery) -> int:
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

    def _deliver(self, session: requests.Session, delivery: Delivery) -> None:
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

    def tell(self, delivery: Delivery, ok: bool, how: str) -> None:
        """Log a delivery's fate, once whatever happens."""
        with delivery.lock:
            if delivery.told:
                return
            delivery.told = True
        tries = f"{delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}"
        log_fields = fields(NOTICE_ID=delivery.event_id, OUTCOME="sent" if ok else "not-sent")
        LOG.log(
            logging.INFO if ok else logging.WARNING,
            "%s: %s event of %s delivered (%s, %s)"
            if ok
            else "%s: %s event of %s not delivered: %s (%s)",
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
