"""packaging/agent.toml, installed as /etc/preempt-agent/agent.toml: valid, and true to the code."""

from __future__ import annotations

import dataclasses
import re

from agent import config as agent_config
from tests.packaging.support import PACKAGING

SHIPPED = PACKAGING / "agent.toml"
# "#key = value" and "#[table]" are settings shown with their default; "# text" is prose,
# and "# key = value" an example for a key whose default (empty) cannot be written out.
SETTING = re.compile(r"^#(?=\[|[a-z_]+ = )")
EXAMPLE = re.compile(r"^# ([a-z_]+) = ")


def uncommented() -> str:
    return "\n".join(
        SETTING.sub("", line) for line in SHIPPED.read_text(encoding="utf-8").splitlines()
    )


def settings(cls: type, prefix: str = "") -> set[str]:
    """Every user-settable key of a config dataclass, dotted ("aws.spot.interval")."""
    names: set[str] = set()
    for field in dataclasses.fields(cls):
        if field.metadata.get("internal"):
            continue
        default = (
            field.default_factory()  # type: ignore[misc]
            if field.default is dataclasses.MISSING
            else field.default
        )
        if dataclasses.is_dataclass(default):
            names |= settings(type(default), f"{prefix}{field.name}.")
        else:
            names.add(prefix + field.name)
    if cls is agent_config.Config:  # the clouds' tables come from the registry
        for name, section in agent_config.section_classes().items():
            names |= settings(section, f"{name}.")
    return names


def shown(text: str, examples: bool = False) -> set[str]:
    """Dotted keys set in ``text`` (and, with ``examples``, those shown as "# key = ")."""
    names: set[str] = set()
    table = ""
    for line in text.splitlines():
        example = EXAMPLE.match(line) if examples else None
        if line.startswith("["):
            table = line.strip("[]") + "."
        elif re.match(r"^[a-z_]+ = ", line):
            names.add(table + line.split(" = ")[0])
        elif example:
            names.add(table + example.group(1))
    return names


def test_shipped_file_is_all_comments_and_means_defaults() -> None:
    parsed = agent_config.parse(SHIPPED.read_text(encoding="utf-8"))
    assert dataclasses.replace(parsed, source=None) == agent_config.Config()


def test_every_value_shown_is_the_default() -> None:
    parsed = agent_config.parse(uncommented())
    assert dataclasses.replace(parsed, source=None) == agent_config.Config()


def test_every_setting_is_shown() -> None:
    missing = settings(agent_config.Config) - shown(uncommented(), examples=True)
    assert not missing, f"add these keys, commented out, to packaging/agent.toml: {sorted(missing)}"


def test_no_setting_is_unknown() -> None:
    unknown = shown(uncommented(), examples=True) - settings(agent_config.Config)
    assert not unknown, f"packaging/agent.toml shows keys the agent does not know: {unknown}"
