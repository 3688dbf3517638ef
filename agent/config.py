"""The agent's settings: TOML into frozen dataclasses, every key defaulted and checked.

Unknown keys and bad values are errors that name the key, so a typo never silently turns a
watcher off. The schema is the dataclasses themselves: a field's type and its ``check``
metadata say what is allowed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import typing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11
    import tomli as tomllib

LOG = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/preempt-agent/agent.toml")
PROVIDERS = ("auto", "aws", "alibaba")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names every offending key."""


def _positive(value: Any) -> Optional[str]:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: Any) -> Optional[str]:
    return None if value >= 0 else "must not be negative"


def _one_of(*choices: str) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _ttl(value: Any) -> Optional[str]:
    return None if 1 <= value <= 21600 else "must be between 1 and 21600"


def _url(value: Any) -> Optional[str]:
    return None if value.startswith(("http://", "https://")) else "must be an http(s) URL"


def _opt(default: Any, check: Callable[[Any], Optional[str]], doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


def _secret(doc: str) -> Any:
    """A credential: kept out of the dataclass repr and of error messages."""
    return field(default="", repr=False, metadata={"doc": doc, "secret": True})


@dataclass(frozen=True)
class WatcherConfig:
    """One metadata path polled on its own schedule."""

    enabled: bool = True
    interval: float = _opt(1.0, _positive, "seconds between polls")


@dataclass(frozen=True)
class AwsConfig:
    metadata_url: str = _opt("http://169.254.169.254", _url)
    token_ttl: int = _opt(21600, _ttl, "IMDSv2 token lifetime, seconds")
    timeout: float = _opt(2.0, _positive, "per-request timeout, seconds")
    max_backoff: float = _opt(10.0, _positive, "longest wait between failing polls")
    endpoint_url: str = _opt("", _url, "EC2 API endpoint; empty = AWS's own for the region")
    api_timeout: float = _opt(10.0, _positive, "EC2 API connect and read timeout, seconds")
    spot: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 1.0))
    rebalance: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 5.0))
    maintenance: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 60.0))
    asg: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 5.0))


@dataclass(frozen=True)
class AlibabaConfig:
    metadata_url: str = _opt("http://100.100.100.200", _url)
    token_ttl: int = _opt(21600, _ttl, "hardened-mode token lifetime, seconds")
    timeout: float = _opt(2.0, _positive, "per-request timeout, seconds")
    max_backoff: float = _opt(10.0, _positive, "longest wait between failing polls")
    interruption_behavior: str = _opt(
        "terminate",
        _one_of("terminate", "stop"),
        "the instance's SpotInterruptionBehavior, told to hooks as the action",
    )
    ecs_endpoint: str = _opt("", _url, "ECS API endpoint; empty = the SDK's for the region")
    api_timeout: float = _opt(10.0, _positive, "ECS API connect and read timeout, seconds")
    access_key_id: str = field(
        default="", metadata={"doc": "API key instead of the instance RAM role; empty = role"}
    )
    access_key_secret: str = _secret("the secret of access_key_id")
    ram_role: str = field(
        default="", metadata={"doc": "the instance RAM role's name; empty = ask metadata"}
    )
    spot: WatcherConfig = field(default_factory=partial(WatcherConfig, True, 2.0))


@dataclass(frozen=True)
class Config:
    provider: str = _opt("auto", _one_of(*PROVIDERS), "cloud, or auto-detect")
    hooks_dir: Path = Path("/etc/preempt-agent/hooks.d")
    state_dir: Path = Path("/var/lib/preempt-agent")
    safety_margin: float = _opt(10.0, _not_negative, "hooks end this long before the deadline")
    hook_timeout: float = _opt(0.0, _not_negative, "per-hook limit; 0 = whatever is left")
    kill_grace: float = _opt(5.0, _not_negative, "SIGTERM to SIGKILL, seconds")
    max_run_time: float = _opt(600.0, _positive, "bound for notices that carry no deadline")
    plugins: bool = True
    sysfs_root: Path = Path("/sys")
    probe_metadata: bool = True
    log_level: str = _opt("info", _one_of(*LOG_LEVELS))
    confirm: bool = field(
        default=True,
        metadata={"doc": "ask the cloud API after a termination drain; off = the notice ends it"},
    )
    confirm_grace: float = _opt(
        60.0, _not_negative, "confirmation goes on this long past the notice deadline"
    )
    rebalance_resume_after: float = _opt(
        3600.0,
        _not_negative,
        "a drained rebalance recommendation with no termination this long after is withdrawn; "
        "0 = only when it disappears",
    )
    aws: AwsConfig = field(default_factory=AwsConfig)
    alibaba: AlibabaConfig = field(default_factory=AlibabaConfig)
    source: Optional[Path] = field(default=None, metadata={"internal": True})


def _convert(name: str, kind: Any, value: Any, errors: list[str]) -> Any:
    """Check one value against its declared type; append a message naming ``name`` if wrong."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            errors.append(f"{name}: expected a table")
            return None
        return _build(kind, value, f"{name}.", errors)
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


def _build(cls: Any, table: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in fields:
            errors.append(f"{prefix}{key}: unknown setting (known: {', '.join(sorted(fields))})")
            continue
        before = len(errors)
        value = _convert(prefix + key, hints[key], raw, errors)
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
    return cls(**values)


def parse(text: str, source: Optional[Path] = None) -> Config:
    """Build a Config from TOML text; raise ConfigError listing every problem."""
    where = str(source) if source else "config"
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    errors: list[str] = []
    config = _build(Config, table, "", errors)
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
