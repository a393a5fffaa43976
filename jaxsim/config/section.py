"""One-section configs of the post-hoc studies on a saved sweep (`jaxsim steer`: `steer`,
`jaxsim edit`: `edit`): a frozen dataclass of `field`s, read from YAML with KEY=VALUE overrides
and validated like a sweep config (one line naming the bad key and what is allowed)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import yaml

from jaxsim.config.load import (INT32_MAX, missing_file, parse_override, safe_load_unique,
                                unknown_key)
from jaxsim.errors import ConfigError


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def int_list(value: Any, where: str, lo: int) -> tuple:
    """A list of integers in [lo, INT32_MAX] as a sorted tuple without repeats (one line naming
    `where` otherwise)."""
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and lo <= v <= INT32_MAX
            for v in value):
        raise ConfigError(f"{where} must be a list of integers >= {lo}, got {value!r}")
    return tuple(sorted(set(value)))


def parse(raw: Any, section: str, cls, check: Callable[[str, Any], Any], what: str):
    """cls from {section: {...}}: unknown keys refused, each value through check(name, value),
    defaults for the rest. `what` names the config in messages ("a steering config")."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict) or set(raw) - {section}:
        raise ConfigError(f"{what} is a mapping with one section, {section}; got "
                          f"{sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    body = raw.get(section) or {}
    if not isinstance(body, dict):
        raise ConfigError(f"section '{section}' must be a mapping, got {body!r}")
    names = _names(cls)
    for key in body:
        if key not in names:
            raise unknown_key(f"{section}.{key}", [f"{section}.{n}" for n in names], "key")
    defaults = cls()
    return cls(**{k: check(k, body.get(k, getattr(defaults, k))) for k in names})


def apply_overrides(raw: Any, overrides: list[str], section: str, cls) -> Any:
    """`SECTION.KEY=VALUE` overrides on a raw one-section config."""
    if not isinstance(raw, dict):
        return raw                                  # parse names the problem
    body, seen = dict(raw.get(section) or {}), set()
    for text in overrides:
        parts, value = parse_override(text)
        key = ".".join(parts)
        if key in seen:
            raise ConfigError(f"override {key} is given twice; give each key once")
        seen.add(key)
        if len(parts) != 2 or parts[0] != section:
            raise unknown_key(key, [f"{section}.{n}" for n in _names(cls)], "key")
        body[parts[1]] = value
    return {**raw, section: body}


def load(path: str | Path | None, overrides: list[str], section: str, cls,
         from_dict: Callable[[Any], Any], what: str):
    """The config at `path` (None: every default) with overrides, through `from_dict`."""
    raw: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise missing_file(path)
        try:
            raw = safe_load_unique(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{what} '{path}' is not valid YAML: "
                              f"{str(e).splitlines()[0]}") from None
    return from_dict(apply_overrides(raw or {}, list(overrides), section, cls))


def to_dict(cfg, section: str) -> dict:
    """{section: {key: value}}, tuples as lists (plain YAML)."""
    return {section: {k: list(v) if isinstance(v, tuple) else v
                      for k, v in dataclasses.asdict(cfg).items()}}
