"""Typed, frozen configuration: YAML load, dotted KEY=VALUE overrides, validation.

A config has four sections (`task`, `model`, `train`, `sweep`). Every field of the first three
is either *static* (changes array shapes or control flow: part of the compile-time `Spec`) or
*dynamic* (a per-run scalar that lives in the vmapped `Hparams` pytree). Dynamic fields are
marked with ``dynamic=True`` in their metadata; ``dynamic="max"`` additionally keeps the group
maximum in the static spec (e.g. ``task.num_chains``: the bank size is static, the number of
active chains is a per-run mask).

Every validation failure raises `ConfigError` with one line naming the key and what is allowed.
`task.name` picks the testbed (`jaxsim.testbeds`), whose own dataclass is the task section.
The cross-field rules live in `jaxsim.config.rules`, the static/dynamic split (`Spec`,
`hparams_of`) in `jaxsim.config.spec`; `jaxsim.config` exports them all.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from jaxsim.config.rules import MAX_RUNS, check_consistency
from jaxsim.config.schema import CORE_SECTIONS, DEFAULT_TASK, SECTION_NAMES, SWEEPABLE, Config
from jaxsim.errors import ConfigError

# The one flat task section of jaxsim <= 0.1 held every testbed's fields, and results
# directories written then hold all of them in config.yaml: a key of another testbed at its old
# default is dropped on load, so those directories still resume, analyse and plot.
LEGACY_TASK_DEFAULTS = {
    "num_states": 10, "alpha": 1.0, "num_chains": 64, "weights": "uniform", "context_length": 64,
    "matrix_size": 7, "rank": 2, "mask_prob": 0.3, "factor_dist": "uniform", "factor_scale": 1.0,
    "geometry": "subspaces", "dim": 64, "num_concepts": 8, "max_concept_dim": 8,
    "noise_std": 0.0, "source": "", "source_run": 0, "source_step": -1, "site": "block0",
    "concept_offset": 4.0, "concept_mean": 1.0, "concept_mean_step": 1.0, "concept_noise": 0.05,
    "concept_noise_step": 0.0, "rotate": False, "grammar": "dyck2", "graph": "grid",
    "graph_size": 4, "vocab": 64, "pretrain_frac": 0.0}

INT32_MAX = 2**31 - 1   # every int field becomes an int32 array (a step, a count, a size)

# task.source / source_run / source_step of the activations testbed before stages: now the
# core's init.source / init.run / init.step (a task section without those fields moves them)
LEGACY_INIT_KEYS = {"source": "source", "source_run": "run", "source_step": "step"}


def _testbed(name: str):
    from jaxsim import testbeds  # the registry imports testbed packages, which import config
    return testbeds.get(name)


def _classes(task_cls: type) -> dict[str, type]:
    return {"task": task_cls, **CORE_SECTIONS}


def all_keys(task_cls: type | None = None) -> list[str]:
    """Every dotted key of a config whose task section is `task_cls` (default: the default
    testbed's)."""
    task_cls = task_cls or _testbed(DEFAULT_TASK).config
    return [f"{s}.{f.name}" for s, cls in _classes(task_cls).items()
            for f in dataclasses.fields(cls)]


def field_info(key: str, task_cls: type | None = None) -> dataclasses.Field:
    section, name = key.split(".", 1)
    cls = (task_cls or _testbed(DEFAULT_TASK).config) if section == "task" else CORE_SECTIONS[section]
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown(key: str, options: list[str], what: str = "key", where: str = "") -> ConfigError:
    return ConfigError(f"unknown {what} '{key}'{where}{_suggest(key, options)}; "
                       f"valid: {', '.join(options)}")


def _unknown_dotted(key: str, options: list[str], what: str = "key", where: str = "",
                    sections: tuple[str, ...] = SECTION_NAMES) -> ConfigError:
    """An unknown dotted key: a bad section lists the sections (suggesting the closest), a bad
    name in a known section lists that section's keys only."""
    section = key.split(".", 1)[0]
    if section not in sections or "." not in key:
        return ConfigError(f"unknown {what} '{key}': no section '{section}'"
                           f"{_suggest(section, list(sections))}; sections: {', '.join(sections)}")
    return _unknown(key, [k for k in options if k.split(".", 1)[0] == section], what, where)


def coerce(key: str, value: Any, where: str | None = None, task_cls: type | None = None) -> Any:
    """Check `value` against the type and range of field `key`; returns the typed value."""
    f = field_info(key, task_cls)
    where = where or key
    if key == "sweep.save_steps":
        if value is None:
            return None
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= INT32_MAX
                for v in value):
            raise ConfigError(f"{where} must be null or a list of positive integers "
                              f"(<= 2**31 - 1 = {INT32_MAX}), got {value!r}")
        return tuple(sorted(set(value)))
    if key in ("sweep.axes", "sweep.grids"):
        return value
    if key == "sweep.memory_budget":
        return _check_budget(value, where)
    return check_value(f, value, where)


def check_value(f: dataclasses.Field, value: Any, where: str) -> Any:
    """Check `value` against the type, choices and range of a `field(...)`-declared dataclass
    field (`where` names it in the error); returns the typed value."""
    kind = type(f.default) if f.default is not None else None
    meta = {"choices": None, "min": None, "max": None, "min_exclusive": False, **f.metadata}
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise ConfigError(f"{where} must fit an int32 (<= 2**31 - 1 = {INT32_MAX}), "
                              f"got {value!r}")
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        value = float(value)
    elif kind is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ConfigError(f"{where} must be one of {', '.join(meta['choices'])}; got {value!r}")
    lo, hi = meta["min"], meta["max"]
    if lo is not None and (value < lo or (meta["min_exclusive"] and value == lo)):
        rel = ">" if meta["min_exclusive"] else ">="
        raise ConfigError(f"{where} must be {rel} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where} must be <= {hi}, got {value!r}")
    return value


def _check_budget(value: Any, where: str) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{where} must be a positive number of GiB, got {value!r}")
        return float(value)
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text in ("auto", "none") or (text and re.fullmatch(r"\d+(\.\d+)?\s*%", text)
                                    and 0 < float(text.rstrip("% ")) <= 100):
        return text
    raise ConfigError(f"{where} must be 'auto', 'none', a positive number of GiB or a share "
                      f"like '25%' (at most 100%), got {value!r}")


def _check_grids(grids: Any, task_cls: type) -> list:
    if grids is None:
        return []
    if not isinstance(grids, list) or not all(isinstance(g, dict) and g for g in grids):
        raise ConfigError(f"sweep.grids must be a list of non-empty mappings of dotted keys to "
                          f"lists, got {grids!r}")
    return [_check_axes(g, task_cls, f"sweep.grids[{i}]") for i, g in enumerate(grids)]


def _check_axes(axes: Any, task_cls: type, name: str = "sweep.axes") -> dict:
    if axes is None:
        return {}
    if not isinstance(axes, dict):
        raise ConfigError(f"{name} must be a mapping of dotted keys to lists, got {axes!r}")
    sweepable = [k for k in all_keys(task_cls) if k.split(".")[0] in SWEEPABLE and k != "task.name"]
    out = {}
    for key, values in axes.items():
        if key == "task.name":
            raise ConfigError(f"{name}.task.name: a sweep trains one testbed, so task.name cannot "
                              f"be an axis; run one sweep per testbed")
        if key == "model.name":
            raise ConfigError(f"{name}.model.name: a sweep trains one model kind (its analysis "
                              f"and figures read one model's metrics), so model.name cannot be "
                              f"an axis; run one sweep per model")
        if key not in sweepable:
            raise _unknown_dotted(key, sweepable, "axis key", sections=SWEEPABLE)
        if not isinstance(values, list) or len(values) == 0:
            raise ConfigError(f"{name}.{key} must be a non-empty list of values, got {values!r}")
        typed = [coerce(key, v, where=f"{name}.{key}", task_cls=task_cls) for v in values]
        if len(set(typed)) != len(typed):
            raise ConfigError(f"{name}.{key} has repeated values: {values!r}")
        out[key] = typed
    return out


def from_dict(raw: dict) -> Config:
    """Build and validate a `Config` from a nested mapping (missing keys take defaults).

    `task.name` selects the testbed, whose own dataclass is the task section; a testbed's
    default model (its first `models` entry) is used when `model.name` is not given."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping with sections {', '.join(SECTION_NAMES)}; "
                          f"got a {type(raw).__name__}")
    for section, body in raw.items():
        if section not in SECTION_NAMES:
            raise _unknown(section, list(SECTION_NAMES), "section")
        if body is not None and not isinstance(body, dict):
            raise ConfigError(f"section '{section}' must be a mapping, got {body!r}")
    task_body = dict(raw.get("task") or {})
    testbed = _testbed(task_body.get("name", DEFAULT_TASK))
    raw = _move_legacy_init(raw, task_body, testbed.config)
    model_body = dict(raw.get("model") or {})
    model_body.setdefault("name", testbed.models[0])
    bodies = {**{k: v or {} for k, v in raw.items()}, "task": task_body, "model": model_body}
    classes = _classes(testbed.config)
    sections = {}
    for section, body in bodies.items():
        names = [f.name for f in dataclasses.fields(classes[section])]
        values = {}
        for name, value in body.items():
            if section == "task" and name not in names and LEGACY_TASK_DEFAULTS.get(name, ...) == value:
                continue
            if name not in names:
                where = f" for task.name={testbed.name}" if section == "task" else ""
                raise _unknown(f"{section}.{name}", [f"{section}.{n}" for n in names], "key",
                               where)
            values[name] = (value if section == "task" and name == "name" else
                            coerce(f"{section}.{name}", value, task_cls=testbed.config))
        if section == "sweep" and "axes" in values:
            values["axes"] = _check_axes(values["axes"], testbed.config)
        if section == "sweep" and "grids" in values:
            values["grids"] = _check_grids(values["grids"], testbed.config)
        sections[section] = classes[section](**values)
    sections.setdefault("task", testbed.config())
    cfg = resolve(Config(**sections))
    _check_run_count(cfg)     # before the per-value checks below, which are linear in it
    check_consistency(cfg)
    for key, values in cfg.sweep.axes.items():
        for v in values:
            check_consistency(resolve(replace_key(cfg, key, v)), where=f"sweep.axes.{key}={v!r}: ")
    if set(cfg.sweep.axes) & {k for g in cfg.sweep.grids for k in g}:
        raise ConfigError("a key may be in sweep.axes or in sweep.grids, not both: "
                          f"{sorted(set(cfg.sweep.axes) & {k for g in cfg.sweep.grids for k in g})}")
    return cfg


def grid_axes(cfg: Config) -> list[dict]:
    """The axes of each grid of the sweep ({key: values}): sweep.axes with each of
    sweep.grids laid over it (one grid, sweep.axes itself, when there are none)."""
    return [{**cfg.sweep.axes, **g} for g in cfg.sweep.grids or [{}]]


def num_runs(cfg: Config) -> int:
    """Runs of the sweep: over grids, the product of the axes' lengths, times sweep.seeds."""
    return sum(math.prod(len(v) for v in axes.values()) for axes in grid_axes(cfg)) \
        * cfg.sweep.seeds


def _check_run_count(cfg: Config) -> None:
    count = num_runs(cfg)
    if count > MAX_RUNS:
        raise ConfigError(f"the sweep has {count:,} runs (the product of the axes' lengths, over "
                          f"grids, times sweep.seeds={cfg.sweep.seeds}); at most {MAX_RUNS:,} "
                          f"runs per sweep: shorten the axes or split the sweep")


def _move_legacy_init(raw: dict, task_body: dict, task_cls: type) -> dict:
    """task.source/source_run/source_step (older configs) -> init.source/run/step."""
    names = {f.name for f in dataclasses.fields(task_cls)}
    sweep = raw.get("sweep")
    if isinstance(sweep, dict) and isinstance(sweep.get("axes"), dict):
        axes = {(f"init.{LEGACY_INIT_KEYS[k[5:]]}" if k.startswith("task.")
                 and k[5:] in LEGACY_INIT_KEYS and k[5:] not in names else k): v
                for k, v in sweep["axes"].items()}
        raw = {**raw, "sweep": {**sweep, "axes": axes}}
    moved = {new: task_body.pop(old) for old, new in LEGACY_INIT_KEYS.items()
             if old in task_body and old not in names}
    if not moved:
        return raw
    init = dict(raw.get("init") or {})
    for name, value in moved.items():
        if name in init and init[name] != value:
            raise ConfigError(f"init.{name}={init[name]!r} and its older name task."
                              f"{next(o for o, n in LEGACY_INIT_KEYS.items() if n == name)}="
                              f"{value!r} disagree; keep init.{name}")
        init.setdefault(name, value)
    if init.get("source", "") == "":   # a flat config.yaml's unused defaults
        init = {k: v for k, v in init.items() if not (k in moved and v == moved[k]
                                                     and v in ("", 0, -1))}
    return {**raw, "task": task_body, **({"init": init} if init else {})}


def axis_keys(cfg: Config) -> list[str]:
    """Every swept key: sweep.axes, then the grids' keys in order of first appearance."""
    keys = list(cfg.sweep.axes)
    for g in cfg.sweep.grids:
        keys += [k for k in g if k not in keys]
    return keys


def resolve(cfg: Config) -> Config:
    """Derived defaults: a run shorter than `eval_every` evaluates once, at its end."""
    if cfg.train.eval_every > cfg.train.steps:
        return replace_key(cfg, "train.eval_every", cfg.train.steps)
    return cfg


def replace_key(cfg: Config, key: str, value: Any) -> Config:
    section, name = key.split(".", 1)
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section),
                                                                     **{name: value})})


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
    """Apply KEY=VALUE overrides to a raw nested dict. `sweep.axes.a.b=[..]` sets one axis."""
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
    return raw


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


def _safe_load_unique(text: str) -> Any:
    """yaml.safe_load with _UniqueKeyLoader (safe: only plain YAML tags are constructed)."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _missing_file(path: Path) -> ConfigError:
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
        raise _missing_file(path)
    try:
        raw = _safe_load_unique(path.read_text())
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
