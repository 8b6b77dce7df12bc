"""How a configuration key is declared: a dataclass field whose metadata says everything about it, once.

`key()` makes the field; `Key` is what it records (YAML name, default, bounds, check, one-line doc), read back
by the generic reader (read.py) and the documentation table (docs.py), so the three can never disagree.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Check = Callable[[Any], Any]
"""Validates one value and returns it normalized; raises checks.Invalid with a message that omits the key."""

Derive = Callable[[Mapping[str, Any]], Any]
"""Computes the default of a key from the other keys of its section (by Python name)."""

CrossChecks = tuple[Callable[[Any], None], ...]
"""A section's rules over several of its keys; each raises checks.Invalid naming the key at fault."""

_METADATA = "ccr_webhook_key"


@dataclass(frozen=True)
class Key:
    """One configuration key as declared; the field's name and type come from the dataclass."""

    doc: str
    name: str | None = None  # the YAML name; None: the field name in camelCase
    minimum: float | None = None
    maximum: float | None = None
    check: Check | None = None
    derive: Derive | None = None  # default computed from the section's other keys
    from_env: str | None = None  # default taken from this Pod environment variable when it is set
    duration: bool = False  # seconds, also written as 90s, 30m, 168h, 7d
    shown: str | None = None  # the default as the docs show it; None: the default itself


def key(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    factory: Callable[[], Any] | None = None,
    name: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    check: Check | None = None,
    derive: Derive | None = None,
    from_env: str | None = None,
    duration: bool = False,
    shown: str | None = None,
) -> Any:
    """A dataclass field declaring one key; without `default`, `factory` or `derive` the key is required."""
    metadata = {_METADATA: Key(doc, name, minimum, maximum, check, derive, from_env, duration, shown)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared_keys(section: type[Any]) -> list[tuple[dataclasses.Field[Any], Key]]:
    """The fields of a section dataclass with their declarations, in declaration order."""
    return [(field, field.metadata[_METADATA]) for field in dataclasses.fields(section) if _METADATA in field.metadata]


def yaml_name(field: dataclasses.Field[Any], declared: Key) -> str:
    """The key as written in YAML: `max_request_bytes` is `maxRequestBytes` unless declared otherwise."""
    if declared.name is not None:
        return declared.name
    return re.sub(r"_([a-z])", lambda match: match.group(1).upper(), field.name)


def has_default(field: dataclasses.Field[Any]) -> bool:
    """Whether the dataclass itself gives the field a value when none is written."""
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
