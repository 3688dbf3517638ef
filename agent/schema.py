"""The settings machinery: TOML tables into frozen dataclasses, every value checked.

The schema is the dataclasses themselves: a field's type says what is allowed, its
``check`` metadata what else a value must satisfy, and a ``convert`` function takes over for
a type :func:`convert` does not know (arrays of tables, secret references). :mod:`agent.config`
holds the core keys, each cloud its own section, :mod:`agent.report.settings` the
``[[webhooks]]`` and ``[metrics]`` tables; all of them are built here.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Optional


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


def convert(name: str, kind: Any, value: Any, errors: list[str], base: Any = None) -> Any:
    """Check one value against its declared type; append a message naming ``name`` if wrong.

    A table fills in only the keys it sets on ``base`` (the field's own default): a
    ``[aws.maintenance]`` table that sets ``enabled`` keeps that watcher's 60 s interval.
    """
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            errors.append(f"{name}: expected a table")
            return None
        return build(kind, value, f"{name}.", errors, base=base)
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


def build(
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
            section = convert(prefix + key, sections[key], raw, errors)
            if section is not None:
                built[key] = section
            continue
        if key not in fields:
            known = ", ".join(sorted([*fields, *(sections or ())]))
            errors.append(f"{prefix}{key}: unknown setting (known: {known})")
            continue
        before = len(errors)
        own = fields[key].metadata.get("convert")  # a type convert() does not know
        if own is not None:
            value = own(prefix + key, raw, errors)
        else:
            value = convert(prefix + key, hints[key], raw, errors, _default(fields[key]))
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
