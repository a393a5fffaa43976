"""Typed, frozen configuration: YAML load, dotted KEY=VALUE overrides, validation.

A config has four sections (`task`, `model`, `train`, `sweep`). Every field of the first three
is either *static* (changes array shapes or control flow: part of the compile-time `Spec`) or
*dynamic* (a per-run scalar that lives in the vmapped `Hparams` pytree). Dynamic fields are
marked with ``dynamic=True`` in their metadata; ``dynamic="max"`` additionally keeps the group
maximum in the static spec (e.g. ``task.num_chains``: the bank size is static, the number of
active chains is a per-run mask).

Every validation failure raises `ConfigError` with one line naming the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jaxsim.schema import (SAE_KINDS, SECTIONS, SWEEPABLE, ModelConfig, SweepConfig,  # noqa: F401
                           TaskConfig, TrainConfig)


class ConfigError(ValueError):
    """A bad config value; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def field_info(key: str) -> dataclasses.Field:
    section, name = key.split(".", 1)
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}[name]


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown(key: str, options: list[str], what: str = "key") -> ConfigError:
    return ConfigError(f"unknown {what} '{key}'{_suggest(key, options)}; "
                       f"valid: {', '.join(options)}")


def coerce(key: str, value: Any, where: str | None = None) -> Any:
    """Check `value` against the type and range of field `key`; returns the typed value."""
    f = field_info(key)
    where = where or key
    kind = type(f.default) if f.default is not None else None
    meta = f.metadata
    if key == "sweep.save_steps":
        if value is None:
            return None
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
            raise ConfigError(f"{where} must be null or a list of positive integers, got {value!r}")
        return tuple(sorted(set(value)))
    if key in ("sweep.axes", "sweep.grids"):
        return value
    if key == "sweep.memory_budget":
        return _check_budget(value, where)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
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


def _check_grids(grids: Any) -> list:
    if grids is None:
        return []
    if not isinstance(grids, list) or not all(isinstance(g, dict) and g for g in grids):
        raise ConfigError(f"sweep.grids must be a list of non-empty mappings of dotted keys to "
                          f"lists, got {grids!r}")
    return [_check_axes(g, f"sweep.grids[{i}]") for i, g in enumerate(grids)]


def _check_axes(axes: Any, name: str = "sweep.axes") -> dict:
    if axes is None:
        return {}
    if not isinstance(axes, dict):
        raise ConfigError(f"{name} must be a mapping of dotted keys to lists, got {axes!r}")
    sweepable = [k for k in all_keys() if k.split(".")[0] in SWEEPABLE]
    out = {}
    for key, values in axes.items():
        if key not in sweepable:
            raise _unknown(key, sweepable, "axis key")
        if not isinstance(values, list) or len(values) == 0:
            raise ConfigError(f"{name}.{key} must be a non-empty list of values, got {values!r}")
        typed = [coerce(key, v, where=f"{name}.{key}") for v in values]
        if len(set(typed)) != len(typed):
            raise ConfigError(f"{name}.{key} has repeated values: {values!r}")
        out[key] = typed
    return out


def from_dict(raw: dict) -> Config:
    """Build and validate a `Config` from a nested mapping (missing keys take defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("config must be a mapping with sections task, model, train, sweep")
    sections = {}
    for section, body in raw.items():
        if section not in SECTIONS:
            raise _unknown(section, list(SECTIONS), "section")
        body = body or {}
        if not isinstance(body, dict):
            raise ConfigError(f"section '{section}' must be a mapping, got {body!r}")
        names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        values = {}
        for name, value in body.items():
            if name not in names:
                raise _unknown(f"{section}.{name}", [f"{section}.{n}" for n in names])
            values[name] = coerce(f"{section}.{name}", value)
        if section == "sweep" and "axes" in values:
            values["axes"] = _check_axes(values["axes"])
        if section == "sweep" and "grids" in values:
            values["grids"] = _check_grids(values["grids"])
        sections[section] = SECTIONS[section](**values)
    cfg = resolve(Config(**sections))
    check_consistency(cfg)
    for key, values in cfg.sweep.axes.items():
        for v in values:
            check_consistency(resolve(replace_key(cfg, key, v)), where=f"sweep.axes.{key}={v!r}: ")
    if set(cfg.sweep.axes) & {k for g in cfg.sweep.grids for k in g}:
        raise ConfigError("a key may be in sweep.axes or in sweep.grids, not both: "
                          f"{sorted(set(cfg.sweep.axes) & {k for g in cfg.sweep.grids for k in g})}")
    return cfg


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


def check_consistency(cfg: Config, where: str = "") -> None:
    """Cross-field rules that no single field can check."""
    m, t = cfg.model, cfg.train
    if m.d_model % m.num_heads:
        raise ConfigError(f"{where}model.d_model ({m.d_model}) must be divisible by "
                          f"model.num_heads ({m.num_heads})")
    if m.positional == "rope" and (m.d_model // m.num_heads) % 2:
        raise ConfigError(f"{where}model.positional=rope needs an even head size "
                          f"(d_model/num_heads = {m.d_model // m.num_heads})")
    if cfg.model.name == "encoder" and cfg.task.name != "matrix_completion":
        raise ConfigError(f"{where}model.name=encoder needs task.name=matrix_completion, "
                          f"got {cfg.task.name!r}")
    if cfg.task.name == "matrix_completion":
        if m.name != "encoder":
            raise ConfigError(f"{where}task.name=matrix_completion needs model.name=encoder, "
                              f"got {m.name!r}")
        if cfg.task.rank > cfg.task.matrix_size:
            raise ConfigError(f"{where}task.rank ({cfg.task.rank}) must be <= task.matrix_size "
                              f"({cfg.task.matrix_size})")
    if (m.name == "sae") != (cfg.task.name in ("concept_geometry", "activations")):
        raise ConfigError(f"{where}model.name=sae goes with task.name=concept_geometry or "
                          f"activations (got model.name={m.name!r}, task.name={cfg.task.name!r})")
    if cfg.task.name == "activations" and not cfg.task.source:
        raise ConfigError(f"{where}task.name=activations needs task.source (a results directory "
                          f"of a trained gpt sweep)")
    if cfg.task.name == "pcfg":
        if m.name != "gpt":
            raise ConfigError(f"{where}task.name=pcfg needs model.name=gpt, got {m.name!r}")
        if cfg.task.context_length < 4:
            raise ConfigError(f"{where}task.context_length must be >= 4 for task.name=pcfg "
                              f"(BOS, a sentence of >= 2 tokens, EOS), got "
                              f"{cfg.task.context_length}")
    if m.causal_coef > 0 and cfg.task.name != "activations":
        raise ConfigError(f"{where}model.causal_coef ({m.causal_coef}) needs task.name=activations "
                          f"(an SAE spliced into a source model); got task.name={cfg.task.name!r}; "
                          f"allowed: 0 (off)")
    if m.name == "sae" and m.k > m.d_sae:
        raise ConfigError(f"{where}model.k ({m.k}) must be <= model.d_sae ({m.d_sae})")
    if m.name == "gpt" and (m.norm != "pre" or m.input != "tokens"):
        raise ConfigError(f"{where}model.norm/model.input apply to model.name=encoder; the gpt is "
                          f"pre-LN on tokens (got norm={m.norm!r}, input={m.input!r})")
    _check_sim(cfg, where)
    _check_microbatch(cfg, where)
    if cfg.task.name == "graph_walk":
        check_graph(cfg, where)
    if t.steps % t.eval_every:
        raise ConfigError(f"{where}train.steps ({t.steps}) must be a multiple of "
                          f"train.eval_every ({t.eval_every})")


def _check_microbatch(cfg: Config, where: str) -> None:
    size, batch = cfg.train.microbatch_size, cfg.train.batch_size
    if size and cfg.model.name == "sae":
        raise ConfigError(f"{where}train.microbatch_size applies to models trained through a task "
                          f"objective, not model.name=sae (its losses use whole-batch statistics); "
                          f"got {size}, allowed: 0")
    if size and batch % size:
        raise ConfigError(f"{where}train.microbatch_size ({size}) must divide train.batch_size "
                          f"({batch}); allowed: 0 (one pass) or a divisor of {batch}")


SIM_MODELS = ("mlp", "symmetric")
SIM_MAX_CONCEPTS = 6


def _check_sim(cfg: Config, where: str) -> None:
    """task.name=sim pairs with model.name mlp|symmetric; s <= min(d, 6); every mu_p > 0 and
    sigma_p >= 0 (mu_p = concept_mean + (p - 1) concept_mean_step, sigma_p likewise)."""
    task, m = cfg.task, cfg.model
    if (task.name == "sim") != (m.name in SIM_MODELS):
        raise ConfigError(f"{where}model.name={m.name!r} and task.name={task.name!r} do not go "
                          f"together: task.name=sim needs model.name in {', '.join(SIM_MODELS)} "
                          f"and those models need task.name=sim")
    if task.name != "sim":
        return
    if m.name == "mlp" and m.activation == "relu" and m.num_layers == 1:
        raise ConfigError(f"{where}model.activation=relu needs model.num_layers >= 2 (a one-layer "
                          f"mlp is linear)")
    if not 1 <= task.num_concepts <= min(task.dim, SIM_MAX_CONCEPTS):
        raise ConfigError(f"{where}task.num_concepts ({task.num_concepts}) must be between 1 and "
                          f"min(task.dim, {SIM_MAX_CONCEPTS}) = "
                          f"{min(task.dim, SIM_MAX_CONCEPTS)} for task.name=sim")
    last = task.num_concepts - 1
    if min(task.concept_mean, task.concept_mean + last * task.concept_mean_step) <= 0:
        raise ConfigError(f"{where}task.concept_mean + (p - 1) task.concept_mean_step must be > 0 "
                          f"for p = 1..{task.num_concepts}; got concept_mean="
                          f"{task.concept_mean}, concept_mean_step={task.concept_mean_step}")
    if task.concept_noise + last * task.concept_noise_step < 0:
        raise ConfigError(f"{where}task.concept_noise + (p - 1) task.concept_noise_step must be "
                          f">= 0 for p = 1..{task.num_concepts}; got concept_noise="
                          f"{task.concept_noise}, concept_noise_step={task.concept_noise_step}")


def check_graph(cfg: Config, where: str = "") -> None:
    """graph_walk: a gpt, a drawable graph, enough tokens for an injective node map."""
    t = cfg.task
    if cfg.model.name != "gpt":
        raise ConfigError(f"{where}task.name=graph_walk needs model.name=gpt, got "
                          f"{cfg.model.name!r}")
    if t.graph == "ring" and t.graph_size < 3:
        raise ConfigError(f"{where}task.graph_size must be >= 3 for task.graph=ring, got "
                          f"{t.graph_size}")
    nodes = t.graph_size if t.graph == "ring" else t.graph_size ** 2
    if t.vocab < nodes:
        raise ConfigError(f"{where}task.vocab ({t.vocab}) must be >= the graph's nodes ({nodes}: "
                          f"task.graph={t.graph}, task.graph_size={t.graph_size})")


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
    for text in overrides:
        parts, value = parse_override(text)
        if parts[:2] == ["sweep", "axes"] and len(parts) > 2:
            sweep = raw.setdefault("sweep", {}) or {}
            raw["sweep"] = sweep
            axes = dict(sweep.get("axes") or {})
            axes[".".join(parts[2:])] = value
            sweep["axes"] = axes
            continue
        if len(parts) != 2:
            raise _unknown(".".join(parts), all_keys())
        section, name = parts
        if section not in SECTIONS:
            raise _unknown(".".join(parts), all_keys())
        body = raw.get(section) or {}
        raw[section] = {**body, name: value}
    return raw


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    return from_dict(apply_overrides(raw, list(overrides)))


def dump(cfg: Config) -> str:
    d = cfg.to_dict()
    d["sweep"]["save_steps"] = list(d["sweep"]["save_steps"]) if d["sweep"]["save_steps"] else None
    return yaml.safe_dump(d, sort_keys=False)


@dataclass(frozen=True)
class Spec:
    """The static (shape-determining) part of a run's config: hashable, a jit static argument.

    Dynamic fields are set to None, except ``dynamic="max"`` fields, which hold the maximum over
    the runs compiled together (the size of a bank that per-run values mask into).
    """
    task: TaskConfig
    model: ModelConfig
    train: TrainConfig


def dynamic_keys() -> list[str]:
    return [k for k in all_keys() if k.split(".")[0] in SWEEPABLE and field_info(k).metadata["dynamic"]]


def spec_of(cfg: Config) -> Spec:
    """The static spec of one run (a "max" field keeps the run's own value)."""
    parts = {}
    for section in SWEEPABLE:
        body = getattr(cfg, section)
        drop = {f.name: None for f in dataclasses.fields(body) if f.metadata["dynamic"] is True}
        parts[section] = dataclasses.replace(body, **drop)
    return Spec(**parts)


def merge_specs(specs: list[Spec]) -> Spec:
    """One spec for runs compiled together: "max" fields take the maximum, the rest must agree."""
    first = specs[0]
    parts = {}
    for section in SWEEPABLE:
        body = getattr(first, section)
        maxed = {f.name: max(getattr(getattr(s, section), f.name) for s in specs)
                 for f in dataclasses.fields(body) if f.metadata["dynamic"] == "max"}
        parts[section] = dataclasses.replace(body, **maxed)
    return Spec(**parts)


def group_key(spec: Spec) -> Spec:
    """Runs with equal group keys share array shapes (their "max" fields are merged)."""
    parts = {}
    for section in SWEEPABLE:
        body = getattr(spec, section)
        maxed = {f.name: None for f in dataclasses.fields(body) if f.metadata["dynamic"] == "max"}
        parts[section] = dataclasses.replace(body, **maxed)
    return Spec(**parts)


def hparams_of(cfg: Config) -> dict:
    """The dynamic per-run values as a nested dict of Python scalars ({'task': {...}, ...})."""
    out: dict = {}
    for key in dynamic_keys():
        section, name = key.split(".")
        out.setdefault(section, {})[name] = getattr(getattr(cfg, section), name)
    return out
