"""Typed, frozen configuration: YAML load, dotted KEY=VALUE overrides, validation.

A config has four sections (`task`, `model`, `train`, `sweep`). Every field of the first three
is either *static* (changes array shapes or control flow: part of the compile-time `Spec`) or
*dynamic* (a per-run scalar that lives in the vmapped `Hparams` pytree). Dynamic fields are
marked with ``dynamic=True`` in their metadata; ``dynamic="max"`` additionally keeps the group
maximum in the static spec (e.g. ``task.num_chains``: the bank size is static, the number of
active chains is a per-run mask).

Every validation failure raises `ConfigError` with one line naming the key and what is allowed.
`task.name` picks the testbed (`jaxsim.testbeds`), whose own dataclass is the task section.
This module reads YAML files and KEY=VALUE overrides; `jaxsim.config.build` makes the `Config`
(`from_dict`), `jaxsim.config.keys` checks each key's value, the cross-field rules live in
`jaxsim.config.rules`, the static/dynamic split (`Spec`, `hparams_of`) in
`jaxsim.config.spec`; `jaxsim.config` exports them all.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from jaxsim.config.budget import fit_budget
from jaxsim.config.build import from_dict
# INT32_MAX and unknown_key are imported from this module by other code, as before the split
from jaxsim.config.keys import (INT32_MAX, _testbed, unknown_key, _unknown_dotted,  # noqa: F401
                                all_keys)
from jaxsim.config.schema import DEFAULT_TASK, SECTION_NAMES, Config
from jaxsim.errors import ConfigError

def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like KEY=VALUE (e.g. train.steps=500)")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {key}: cannot parse value {value!r} as YAML") from None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply KEY=VALUE overrides to a raw nested dict. `sweep.axes.a.b=[..]` sets one axis.
    A `train.steps` override rescales `train.eval_every` when needed (`config.budget`)."""
    before = raw or {}
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (raw or {}).items()}
    seen = set()
    for text in overrides:
        parts, value = parse_override(text)
        key = ".".join(parts)
        if key in seen:
            raise ConfigError(f"override {key} is given twice; give each key once")
        seen.add(key)
        if parts[:2] == ["sweep", "axes"] and len(parts) > 2:
            sweep = raw.setdefault("sweep", {}) or {}
            raw["sweep"] = sweep
            axes = dict(sweep.get("axes") or {})
            axes[".".join(parts[2:])] = value
            sweep["axes"] = axes
            continue
        if len(parts) != 2 or parts[0] not in SECTION_NAMES:
            raise _unknown_dotted(key, all_keys(_override_task(raw)))
        section, name = parts
        body = raw.get(section) or {}
        raw[section] = {**body, name: value}
    return fit_budget(before, raw, seen)


def _override_task(raw: dict) -> type:
    """The task dataclass the raw config selects (for suggestions; the default if it is bad)."""
    name = (raw.get("task") or {}).get("name", DEFAULT_TASK) if isinstance(raw.get("task"), dict) else DEFAULT_TASK
    try:
        return _testbed(name).config
    except ConfigError:
        return _testbed(DEFAULT_TASK).config


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping (plain PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":   # `<<: *base` may be overridden
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:   # an unhashable key: SafeLoader's own error names it
                    continue
                seen[key] = line
                if first is not None:
                    lines = f"lines {first} and {line}" if first != line else f"line {line}"
                    raise ConfigError(f"key '{key}' appears twice in one mapping ({lines}); "
                                      f"keep one")
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """yaml.safe_load with _UniqueKeyLoader (safe: only plain YAML tags are constructed)."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def missing_file(path: Path) -> ConfigError:
    """A missing config file, with the nearest YAML file name of its folder."""
    folder = path.parent
    try:
        names = sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))
    except OSError:
        names = []
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    hint = f" (did you mean '{folder / close[0]}'?)" if close else ""
    return ConfigError(f"config file '{path}' does not exist{hint}")


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    if not path.is_file():
        raise missing_file(path)
    try:
        raw = safe_load_unique(path.read_text())
    except ConfigError as e:
        raise ConfigError(f"config file '{path}': {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if raw is None:
        raise ConfigError(f"config file '{path}' is empty; it must be a mapping with sections "
                          f"{', '.join(SECTION_NAMES)} (an empty mapping {{}} takes every default)")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must be a mapping with sections "
                          f"{', '.join(SECTION_NAMES)}; got a YAML {type(raw).__name__}")
    return from_dict(apply_overrides(raw, list(overrides)))


def dump(cfg: Config) -> str:
    d = cfg.to_dict()
    d["sweep"]["save_steps"] = list(d["sweep"]["save_steps"]) if d["sweep"]["save_steps"] else None
    return yaml.safe_dump(d, sort_keys=False)
