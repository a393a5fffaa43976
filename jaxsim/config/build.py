"""A `Config` from a nested mapping: the sections checked key by key (`jaxsim.config.keys`),
the sweep's axes and grids, the layouts older results directories wrote, the cross-field rules
(`jaxsim.config.rules`); and what is read off a Config (its swept keys, its run count).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxsim.config.keys import _classes, _testbed, unknown_key, _unknown_dotted, all_keys, coerce
from jaxsim.config.rules import MAX_RUNS, check_consistency
from jaxsim.config.schema import DEFAULT_TASK, SECTION_NAMES, SWEEPABLE, Config
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

# task.source / source_run / source_step of the activations testbed before stages: now the
# core's init.source / init.run / init.step (a task section without those fields moves them)
LEGACY_INIT_KEYS = {"source": "source", "source_run": "run", "source_step": "step"}


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
            raise unknown_key(section, list(SECTION_NAMES), "section")
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
                raise unknown_key(f"{section}.{name}", [f"{section}.{n}" for n in names], "key",
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


