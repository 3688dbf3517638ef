"""The agent's settings: TOML into frozen dataclasses, every key defaulted and checked.

Unknown keys and bad values are errors that name the key, so a typo never silently turns a
watcher off. The schema is the dataclasses themselves: a field's type and its ``check``
metadata say what is allowed. The core keys are :class:`Config`'s fields; each cloud's
``[<name>]`` table is that cloud's own dataclass (``Cloud.section``), found through the
registry in :mod:`agent.clouds`, so this module names no cloud.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import stat
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11
    import tomli as tomllib

LOG = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/preempt-agent/agent.toml")
AUTO = "auto"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names every offending key."""


def positive(value: Any) -> Optional[str]:
    return None if value > 0 else "must be greater than 0"


def not_negative(value: Any) -> Optional[str]:
    return None if value >= 0 else "must not be negative"


def one_of(*choices: str) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def ttl_range(value: Any) -> Optional[str]:
    """A metadata session token's lifetime in seconds (up to 6 hours, as the services allow)."""
    return None if 1 <= value <= 21600 else "must be between 1 and 21600"


def http_url(value: Any) -> Optional[str]:
    return None if value.startswith(("http://", "https://")) else "must be an http(s) URL"


def option(default: Any, check: Callable[[Any], Optional[str]], doc: str = "") -> Any:
    """A checked setting: ``check`` returns what is wrong with a value, or None."""
    return field(default=default, metadata={"check": check, "doc": doc})


def secret(doc: str) -> Any:
    """A credential: kept out of the dataclass repr and of error messages."""
    return field(default="", repr=False, metadata={"doc": doc, "secret": True})


@dataclass(frozen=True)
class WatcherConfig:
    """One metadata path polled on its own schedule."""

    enabled: bool = True
    interval: float = option(1.0, positive, "seconds between polls")


# -- [[webhooks]] and [metrics] ---------------------------------------------------------------

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


def _webhooks(name: str, raw: Any, errors: list[str]) -> Optional[tuple[WebhookConfig, ...]]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        errors.append(f"{name}: expected an array of tables ([[{name}]])")
        return None
    hooks = []
    for i, table in enumerate(raw):
        where = f"{name}[{i}]"
        before = len(errors)
        hook = _build(WebhookConfig, table, where + ".", errors)
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


def section_classes() -> dict[str, type]:
    """Each registered cloud's config section class, by name, in registry order."""
    from agent import clouds

    return {cloud.name: cloud.section for cloud in clouds.all_clouds()}


def _provider(value: Any) -> Optional[str]:
    from agent import clouds

    return one_of(AUTO, *clouds.names())(value)


@dataclass(frozen=True)
class Config:
    """The core settings as fields; each cloud's ``[<name>]`` table in ``sections``.

    ``config.section("<name>")`` (or ``config.<name>``) is that cloud's section, its
    defaults when the file has no such table.
    """

    provider: str = option(AUTO, _provider, "cloud, or auto-detect")
    hooks_dir: Path = Path("/etc/preempt-agent/hooks.d")
    state_dir: Path = Path("/var/lib/preempt-agent")
    safety_margin: float = option(10.0, not_negative, "hooks end this long before the deadline")
    hook_timeout: float = option(0.0, not_negative, "per-hook limit; 0 = whatever is left")
    kill_grace: float = option(5.0, not_negative, "SIGTERM to SIGKILL, seconds")
    max_run_time: float = option(600.0, positive, "bound for notices that carry no deadline")
    plugins: bool = True
    sysfs_root: Path = Path("/sys")
    probe_metadata: bool = True
    log_level: str = option("info", one_of(*LOG_LEVELS))
    confirm: bool = field(
        default=True,
        metadata={"doc": "ask the cloud API after a termination drain; off = the notice ends it"},
    )
    confirm_grace: float = option(
        60.0, not_negative, "confirmation goes on this long past the notice deadline"
    )
    rebalance_resume_after: float = option(
        3600.0,
        not_negative,
        "a drained rebalance recommendation with no termination this long after is withdrawn; "
        "0 = only when it disappears",
    )
    drain_on_shutdown: bool = field(
        default=False,
        metadata={"doc": "run the hooks for kind shutdown whenever the agent is stopped"},
    )
    shutdown_timeout: float = option(
        25.0, positive, "a drain on the shutdown path is over this many seconds after the stop"
    )
    webhooks: tuple[WebhookConfig, ...] = field(
        default=(), metadata={"convert": _webhooks, "doc": "[[webhooks]]: who hears of notices"}
    )
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    sections: Mapping[str, Any] = field(
        default_factory=dict, hash=False, metadata={"internal": True}
    )
    """Each registered cloud's section by name; filled with defaults for those not given."""
    source: Optional[Path] = field(default=None, metadata={"internal": True})

    def __post_init__(self) -> None:
        known = section_classes()
        unknown = sorted(set(self.sections) - set(known))
        if unknown:
            raise TypeError(f"no cloud has a config section called {', '.join(unknown)}")
        filled = {name: self.sections.get(name) or cls() for name, cls in known.items()}
        object.__setattr__(self, "sections", filled)

    def section(self, name: str) -> Any:
        """The ``[name]`` section of a registered cloud; KeyError for any other name."""
        return self.sections[name]

    def with_section(self, name: str, section: Any) -> Config:
        """A copy with cloud ``name``'s section replaced."""
        return dataclasses.replace(self, sections={**self.sections, name: section})

    def __getattr__(self, name: str) -> Any:
        # Only reached when ``name`` is no field: ``config.<cloud>`` reads its section.
        sections = self.__dict__.get("sections", {})
        if name.startswith("__") or name not in sections:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return sections[name]


def _convert(name: str, kind: Any, value: Any, errors: list[str], base: Any = None) -> Any:
    """Check one value against its declared type; append a message naming ``name`` if wrong.

    A table fills in only the keys it sets on ``base`` (the field's own default): a
    ``[aws.maintenance]`` table that sets ``enabled`` keeps that watcher's 60 s interval.
    """
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            errors.append(f"{name}: expected a table")
            return None
        return _build(kind, value, f"{name}.", errors, base=base)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):  # TOML allows inf and nan; no duration is either
            errors.append(f"{name}: must be a finite number, got {value!r}")
            return None
        value = float(value) if ok else value
    elif kind in (str, Path):
        ok = isinstance(value, str) and value != ""
        value = kind(value) if ok else value
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {kind!r} for {name}")
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "a string")
        errors.append(f"{name}: expected {want}, got {value!r}")
        return None
    return value


def _build(
    cls: Any,
    table: dict[str, Any],
    prefix: str,
    errors: list[str],
    sections: Optional[Mapping[str, type]] = None,
    base: Any = None,
) -> Any:
    """``cls`` from ``table``; with ``sections``, those tables go to the ``sections`` field."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values: dict[str, Any] = {}
    built: dict[str, Any] = {}
    for key, raw in table.items():
        if sections and key in sections:
            section = _convert(prefix + key, sections[key], raw, errors)
            if section is not None:
                built[key] = section
            continue
        if key not in fields:
            known = ", ".join(sorted([*fields, *(sections or ())]))
            errors.append(f"{prefix}{key}: unknown setting (known: {known})")
            continue
        before = len(errors)
        convert = fields[key].metadata.get("convert")  # a type _convert does not know
        if convert is not None:
            value = convert(prefix + key, raw, errors)
        else:
            value = _convert(prefix + key, hints[key], raw, errors, _default(fields[key]))
        if fields[key].metadata.get("secret"):
            errors[before:] = [e.replace(repr(raw), "'***'") for e in errors[before:]]
        if value is None:
            continue
        check = fields[key].metadata.get("check")
        problem = check(value) if check else None
        if problem:
            errors.append(f"{prefix}{key}: {problem} (got {raw!r})")
            continue
        values[key] = value
    if sections is not None:
        values["sections"] = built
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def _default(spec: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    """A field's default value, or None when it has none."""
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None if spec.default is dataclasses.MISSING else spec.default


def parse(text: str, source: Optional[Path] = None) -> Config:
    """Build a Config from TOML text; raise ConfigError listing every problem."""
    where = str(source) if source else "config"
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    errors: list[str] = []
    config = _build(Config, table, "", errors, section_classes())
    if errors:
        raise ConfigError(f"{where}: " + "; ".join(errors))
    return dataclasses.replace(config, source=source)


def load(path: Optional[Path] = None) -> Config:
    """Read the config file: a missing default file means defaults, a missing named one an error."""
    explicit = path is not None
    path = path or DEFAULT_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such file") from None
        LOG.info("no config file at %s; using defaults", path)
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse(text, path)
