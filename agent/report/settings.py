"""The ``[[webhooks]]`` and ``[metrics]`` settings: their dataclasses and converters.

:class:`agent.config.Config` holds them as its ``webhooks`` and ``metrics`` fields. A
webhook's URL and header values may be ``env:NAME`` or ``file:/PATH`` references: only
their form is checked when the file is read, and :func:`resolve_webhook` reads them when
the agent starts.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from agent.schema import ConfigError, build, one_of, option, positive

WEBHOOK_OUTCOMES = ("drained", "confirmed", "not-confirmed", "withdrawn", "resumed", "failed")
WEBHOOK_EVENTS = ("notice", *WEBHOOK_OUTCOMES)
"""What a webhook can be sent for: the receipt of a notice, and each outcome."""
WEBHOOK_FORMATS = ("json", "slack", "template")
SECRET_ENV, SECRET_FILE = "env:", "file:"


def _secret_value(name: str, raw: Any, errors: list[str]) -> Optional[str]:
    """A string that may be kept out of the config file: ``env:NAME`` reads the environment
    variable NAME, ``file:/PATH`` the content of a file only its owner (root or the agent's
    user) can read. Messages name the key, never the value."""
    if not isinstance(raw, str) or not raw:
        errors.append(f"{name}: expected a string")
        return None
    if raw.startswith(SECRET_ENV):
        var = raw[len(SECRET_ENV) :]
        value = os.environ.get(var, "").strip()
        if not value:
            errors.append(f"{name}: environment variable {var!r} is not set or empty")
            return None
        return value
    if not raw.startswith(SECRET_FILE):
        return raw
    path = Path(raw[len(SECRET_FILE) :])
    if not path.is_absolute():
        errors.append(f"{name}: {str(path)!r} is not an absolute path")
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            st = os.fstat(handle.fileno())
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{name}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
        return None
    if st.st_mode & 0o077:
        errors.append(
            f"{name}: {path} has mode {stat.S_IMODE(st.st_mode):04o}: a secrets file must not "
            "be readable or writable by group or others (chmod 600)"
        )
        return None
    if st.st_uid not in (0, os.geteuid()):
        errors.append(f"{name}: {path} belongs to uid {st.st_uid}, not root")
        return None
    value = text.strip()
    if not value:
        errors.append(f"{name}: {path} is empty")
        return None
    return value


def _secret_ref(name: str, raw: Any, errors: list[str]) -> Optional[str]:
    """A value as written: a literal, ``env:NAME`` or ``file:/PATH``; only its form is checked
    here. It is read when the agent starts (:func:`resolve_webhook`), so that commands run from
    a shell without the service's environment (``status``) still load the file."""
    if not isinstance(raw, str) or not raw:
        errors.append(f"{name}: expected a string")
        return None
    if raw.startswith(SECRET_ENV) and not raw[len(SECRET_ENV) :].isidentifier():
        errors.append(f"{name}: env: must be followed by an environment variable's name")
        return None
    if raw.startswith(SECRET_FILE) and not raw[len(SECRET_FILE) :].startswith("/"):
        errors.append(f"{name}: file: must be followed by an absolute path")
        return None
    return raw


def _is_ref(value: str) -> bool:
    return value.startswith((SECRET_ENV, SECRET_FILE))


def _webhook_url(name: str, raw: Any, errors: list[str]) -> Optional[str]:
    value = _secret_ref(name, raw, errors)
    if value is not None and not _is_ref(value) and not value.startswith(("http://", "https://")):
        errors.append(f"{name}: must be an http(s) URL")
        return None
    return value


def _webhook_headers(
    name: str, raw: Any, errors: list[str]
) -> Optional[tuple[tuple[str, str], ...]]:
    if not isinstance(raw, dict):
        errors.append(f"{name}: expected a table of header names and values")
        return None
    headers = []
    for header, value in raw.items():
        where = f"{name}.{header}"
        if not header or any(c in header for c in " \t\r\n:"):
            errors.append(f"{where}: not a valid header name")
            continue
        ref = _secret_ref(where, value, errors)
        if ref is None:
            continue
        if "\r" in ref or "\n" in ref:
            errors.append(f"{where}: the value must be one line")
            continue
        headers.append((header, ref))
    return tuple(headers)


def resolve_webhook(index: int, hook: WebhookConfig) -> WebhookConfig:
    """``hook`` with its ``env:`` and ``file:`` values read; ConfigError naming the keys (never
    the values) when one cannot be used."""
    errors: list[str] = []
    where = f"webhooks[{index}]"
    url = _secret_value(f"{where}.url", hook.url, errors)
    if url is not None and not url.startswith(("http://", "https://")):
        errors.append(f"{where}.url: must be an http(s) URL")
    headers = []
    for header, ref in hook.headers:
        value = _secret_value(f"{where}.headers.{header}", ref, errors)
        if value is not None and ("\r" in value or "\n" in value):
            errors.append(f"{where}.headers.{header}: the value must be one line")
        elif value is not None:
            headers.append((header, value))
    if errors:
        raise ConfigError("; ".join(errors))
    return dataclasses.replace(hook, url=url, headers=tuple(headers))


def _webhook_events(name: str, raw: Any, errors: list[str]) -> Optional[tuple[str, ...]]:
    """Event names; ``outcome`` stands for every outcome."""
    if not isinstance(raw, list) or not raw or not all(isinstance(e, str) for e in raw):
        errors.append(f"{name}: expected a non-empty array of event names")
        return None
    events: list[str] = []
    for event in raw:
        if event == "outcome":
            events.extend(WEBHOOK_OUTCOMES)
        elif event in WEBHOOK_EVENTS:
            events.append(event)
        else:
            known = ", ".join(("outcome", *WEBHOOK_EVENTS))
            errors.append(f"{name}: unknown event {event!r} (known: {known})")
            return None
    return tuple(e for e in WEBHOOK_EVENTS if e in events)


def _webhook_template(name: str, raw: Any, errors: list[str]) -> Optional[str]:
    """A Jinja2 template (sandboxed), compiled now so that a syntax error is a config error."""
    if not isinstance(raw, str) or not raw:
        errors.append(f"{name}: expected a string")
        return None
    try:
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import SandboxedEnvironment
    except ImportError:
        errors.append(f"{name}: needs Jinja2 (python3-jinja2, or pip install jinja2)")
        return None
    try:
        SandboxedEnvironment().from_string(raw)
    except TemplateSyntaxError as exc:
        errors.append(f"{name}: template error on line {exc.lineno}: {exc.message}")
        return None
    return raw


@dataclass(frozen=True)
class WebhookConfig:
    """One ``[[webhooks]]`` table: where to send notices and outcomes, and how."""

    url: str = field(
        default="",
        repr=False,
        metadata={"convert": _webhook_url, "secret": True, "doc": "required; env:NAME, file:/PATH"},
    )
    headers: tuple[tuple[str, str], ...] = field(
        default=(),
        repr=False,
        metadata={"convert": _webhook_headers, "doc": "extra headers; values env:NAME, file:/PATH"},
    )
    events: tuple[str, ...] = field(
        default=WEBHOOK_EVENTS,
        metadata={"convert": _webhook_events, "doc": "notice, outcome or single outcomes"},
    )
    timeout: float = option(5.0, positive, "connect and read timeout of one attempt, seconds")
    format: str = option("json", one_of(*WEBHOOK_FORMATS), 'json, slack ({"text"}), template')
    template: str = field(
        default="", metadata={"convert": _webhook_template, "doc": "Jinja2 body, format template"}
    )


def webhook_tables(name: str, raw: Any, errors: list[str]) -> Optional[tuple[WebhookConfig, ...]]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        errors.append(f"{name}: expected an array of tables ([[{name}]])")
        return None
    hooks = []
    for i, table in enumerate(raw):
        where = f"{name}[{i}]"
        before = len(errors)
        hook = build(WebhookConfig, table, where + ".", errors)
        if "url" not in table:
            errors.append(f"{where}.url: required")
        elif (hook.format == "template") != bool(hook.template) and len(errors) == before:
            errors.append(f'{where}.template: set it, and only it, with format = "template"')
        if len(errors) == before:
            hooks.append(hook)
    return tuple(hooks)


def split_listen(text: str) -> tuple[str, int]:
    """``127.0.0.1:9101`` or ``[::1]:9101`` into host and port; ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(text)
    return host, int(port)


def _listen(value: Any) -> Optional[str]:
    try:
        _, port = split_listen(value)
    except ValueError:
        return 'must be "HOST:PORT", like "127.0.0.1:9101"'
    return None if port > 0 else "needs a port number from 1 to 65535"


def _textfile(value: Any) -> Optional[str]:
    if not value.startswith("/") or not value.endswith(".prom"):
        return "must be an absolute path ending in .prom (node_exporter reads only those)"
    return None


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: Prometheus metrics, off unless a destination is set."""

    textfile: str = option("", _textfile, "node_exporter textfile-collector file; empty = none")
    listen: str = option("", _listen, "serve /metrics on HOST:PORT; empty = off")
