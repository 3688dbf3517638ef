"""The agent's settings: TOML into frozen dataclasses, every key defaulted and checked.

Unknown keys and bad values are errors that name the key, so a typo never silently turns a
watcher off. The schema is the dataclasses themselves: a field's type and its ``check``
metadata say what is allowed (the machinery, and the checks the sections share, are in
:mod:`agent.schema` and named here too). The core keys are :class:`Config`'s fields; the
``[[webhooks]]`` and ``[metrics]`` tables are :mod:`agent.report.settings`'s; each cloud's
``[<name>]`` table is that cloud's own dataclass (``Cloud.section``), found through the
registry in :mod:`agent.clouds`, so this module names no cloud.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from agent.report.settings import MetricsConfig, WebhookConfig, webhook_tables
from agent.schema import (
    ConfigError,
    build,
    http_url,
    not_negative,
    one_of,
    option,
    positive,
    secret,
    ttl_range,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11
    import tomli as tomllib

LOG = logging.getLogger(__name__)

DEFAULT_PATH = Path("/etc/preempt-agent/agent.toml")
AUTO = "auto"
LOG_LEVELS = ("debug", "info", "warning", "error")

__all__ = [
    "AUTO",
    "DEFAULT_PATH",
    "Config",
    "ConfigError",
    "MetricsConfig",
    "WatcherConfig",
    "WebhookConfig",
    "http_url",
    "load",
    "not_negative",
    "one_of",
    "option",
    "parse",
    "positive",
    "secret",
    "section_classes",
    "ttl_range",
]


@dataclass(frozen=True)
class WatcherConfig:
    """One metadata path polled on its own schedule."""

    enabled: bool = True
    interval: float = option(1.0, positive, "seconds between polls")


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
        default=(),
        metadata={"convert": webhook_tables, "doc": "[[webhooks]]: who hears of notices"},
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


def parse(text: str, source: Optional[Path] = None) -> Config:
    """Build a Config from TOML text; raise ConfigError listing every problem."""
    where = str(source) if source else "config"
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    errors: list[str] = []
    config = build(Config, table, "", errors, section_classes())
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
