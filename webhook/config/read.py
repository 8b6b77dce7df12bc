"""The generic reader: YAML plus `CCR_WEBHOOK_<SECTION>_<KEY>` overrides into the declared sections, validated.

It walks the section dataclasses of keys.py and reads each key by its declared type, bounds and check, so a new
key needs no reader code. Every error names the key's full path (`upstreams[1].prefix`).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from webhook.config.checks import ConfigError, Invalid, parse_duration
from webhook.config.declare import Derive, Key, declared_keys, has_default, yaml_name
from webhook.config.keys import Config

ENV_PREFIX = "CCR_WEBHOOK_"
_DURATION_HINT = "seconds or a duration such as 90s, 30m, 168h or 7d"

Section = TypeVar("Section")


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file at `path` (None: start from nothing), apply environment overrides, validate."""
    raw: Any = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(handle) or {}
        except OSError as err:
            raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"configuration file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError("configuration: the top level must be a mapping of sections (ccr, upstreams, policy, ...)")
    environ = os.environ if environ is None else environ
    return parse_config(apply_env_overrides(raw, environ), environ)


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of `raw` with every `CCR_WEBHOOK_SECTION_KEY` variable set into it."""
    merged = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        words = name[len(ENV_PREFIX) :].lower().split("_")
        section, key = _split_env_name(words)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"environment {name}: not a valid YAML value: {text!r}") from None
        if key is None:
            merged[section] = value
        else:
            target = merged.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"environment {name}: section {section} is not a mapping")
            target[key] = value
    return merged


def _split_env_name(words: list[str]) -> tuple[str, str | None]:
    """Map ['policy', 'on', 'resolve', 'error'] to ('policy', 'onResolveError'); a lone word names a section."""
    section, rest = words[0], words[1:]
    if not rest:
        return section, None
    return section, rest[0] + "".join(word.capitalize() for word in rest[1:])


def parse_config(raw: dict[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Validate a raw mapping (as read from YAML) into a Config, or raise ConfigError naming the key.

    `environ` gives defaults that come from the Pod (POD_NAMESPACE, by the downward API).
    """
    return read_section(Config, raw, "", environ or {})


def read_section(section: type[Section], raw: Any, path: str, environ: Mapping[str, str]) -> Section:
    """One section dataclass from its mapping: every declared key typed, bounded, checked; unknown keys refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'configuration'}: must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(section)
    values: dict[str, Any] = {}
    derived: list[tuple[str, Derive, Key, str]] = []
    known: list[str] = []
    for field, declared in declared_keys(section):
        name = yaml_name(field, declared)
        known.append(name)
        where = _join(path, name)
        hint = hints[field.name]
        given = raw.get(name)
        if given is None and declared.derive is not None:
            derived.append((field.name, declared.derive, declared, where))
            continue
        if given is None and dataclasses.is_dataclass(hint) and has_default(field):
            given = {}  # an absent section is read from nothing, so its defaults from the Pod's environment apply
        value = (
            _default(field, declared, where, environ) if given is None else _read(hint, given, where, declared, environ)
        )
        values[field.name] = _checked(value, declared, where)
    for field_name, derive, declared, where in derived:  # after the others: a derived default reads them
        values[field_name] = _checked(derive(values), declared, where)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key (known here: {', '.join(sorted(known))})")
    result = section(**values)
    for rule in getattr(section, "cross_checks", ()):
        try:
            rule(result)
        except Invalid as err:
            raise ConfigError(f"{_join(path, err.key) if err.key else path or 'configuration'}: {err}") from None
    return result


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _default(field: dataclasses.Field[Any], declared: Key, where: str, environ: Mapping[str, str]) -> Any:
    """The value of a key that is not written: from the Pod's environment, the declaration, or an error."""
    if declared.from_env is not None and environ.get(declared.from_env):
        return environ[declared.from_env]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise ConfigError(f"{where}: is required")


def _checked(value: Any, declared: Key, where: str) -> Any:
    """The value through the key's own check, its message prefixed with the key's path."""
    if value is None or declared.check is None:
        return value
    try:
        return declared.check(value)
    except Invalid as err:
        raise ConfigError(f"{where}: {err}") from None


def _read(hint: Any, value: Any, where: str, declared: Key, environ: Mapping[str, str]) -> Any:
    """A written value as the declared type (`X | None` reads as X: None means not written)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
    if dataclasses.is_dataclass(hint):
        return read_section(typing.cast(type[Any], hint), value, where, environ)
    if typing.get_origin(hint) is tuple:
        return _read_list(typing.get_args(hint)[0], value, where, environ)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, got {value!r}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(member.value for member in hint)
            raise ConfigError(f"{where}: must be one of {allowed}, got {value!r}") from None
    if hint not in (int, float):
        raise TypeError(f"{where}: {hint!r} is not a type the reader knows (docs/development.md lists them)")
    if declared.duration:
        return _read_duration(value, where, declared)
    return _read_number(value, where, declared, whole=hint is int)


def _read_list(item: Any, value: Any, where: str, environ: Mapping[str, str]) -> tuple[Any, ...]:
    """A list of sections (`upstreams`) or of strings; an empty value (`""`) reads as an empty list."""
    value = value or []
    if dataclasses.is_dataclass(item):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list, got {type(value).__name__}")
        return tuple(
            read_section(typing.cast(type[Any], item), entry, f"{where}[{index}]", environ)
            for index, entry in enumerate(value)
        )
    if item is not str:
        raise TypeError(f"{where}: a list of {item!r} is not a type the reader knows")
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise ConfigError(f"{where}: must be a list of strings, got {value!r}")
    return tuple(value)


def _read_number(value: Any, where: str, declared: Key, whole: bool) -> Any:
    """An int (whole) or a number, within the declared bounds; written as it was (2 stays 2)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        raise ConfigError(f"{where}: must be {'a whole number' if whole else 'a number'}, got {value!r}")
    if declared.minimum is not None and value < declared.minimum:
        raise ConfigError(f"{where}: must be at least {declared.minimum}, got {value!r}")
    if declared.maximum is not None and value > declared.maximum:
        raise ConfigError(f"{where}: must be at most {declared.maximum}, got {value!r}")
    return value


def _read_duration(value: Any, where: str, declared: Key) -> float:
    """Seconds, written as a number or as a duration string (`168h`, `7d`, `1h30m`), within the declared bounds."""
    if isinstance(value, str):
        try:
            value = parse_duration(value)
        except ValueError:
            raise ConfigError(f"{where}: must be {_DURATION_HINT}, got {value!r}") from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: must be {_DURATION_HINT}, got {value!r}")
    if declared.minimum is not None and value < declared.minimum:
        raise ConfigError(f"{where}: must be at least {declared.minimum:g} seconds, got {value:g}")
    if declared.maximum is not None and value > declared.maximum:
        raise ConfigError(f"{where}: must be at most {declared.maximum:g} seconds, got {value:g}")
    return float(value)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what, on one line: `line 3, column 1: expected the node content, but found '<stream end>'`."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or not problem:
        return " ".join(str(err).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
