"""The compile-time split of a run's config: the static `Spec` (array shapes and control flow:
a jit static argument) and the dynamic per-run values (`hparams_of`, vmapped as a pytree).

Which fields are dynamic is each field's `dynamic` metadata (`jaxsim.config.field`), read from
the section objects themselves, so a testbed's own task dataclass needs nothing more.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from jaxsim.config.schema import SWEEPABLE, Config, InitConfig, ModelConfig, TrainConfig


@dataclass(frozen=True)
class Spec:
    """The static (shape-determining) part of a run's config: hashable, a jit static argument.

    Dynamic fields are set to None, except ``dynamic="max"`` fields, which hold the maximum over
    the runs compiled together (the size of a bank that per-run values mask into). In a staged
    sweep (`init.source`), `source` is the static spec of the source shape group the runs start
    from (their parameters' shapes, the source task to sample); None otherwise.
    """
    task: Any               # the testbed's task dataclass
    model: ModelConfig
    train: TrainConfig
    init: InitConfig = InitConfig()
    source: Optional["Spec"] = None


def dynamic_keys(cfg: Config | Spec) -> list[str]:
    """The dotted keys of the dynamic fields (per-run values, vmapped), in schema order."""
    return [f"{section}.{f.name}" for section in SWEEPABLE
            for f in dataclasses.fields(getattr(cfg, section)) if f.metadata.get("dynamic")]


def spec_of(cfg: Config) -> Spec:
    """The static spec of one run (a "max" field keeps the run's own value)."""
    parts = {}
    for section in SWEEPABLE:
        body = getattr(cfg, section)
        drop = {f.name: None for f in dataclasses.fields(body)
                if f.metadata.get("dynamic") is True}
        parts[section] = dataclasses.replace(body, **drop)
    return Spec(**parts)


def merge_specs(specs: list[Spec]) -> Spec:
    """One spec for runs compiled together: "max" fields take the maximum, the rest must agree."""
    first = specs[0]
    parts = {}
    for section in SWEEPABLE:
        body = getattr(first, section)
        maxed = {f.name: max(getattr(getattr(s, section), f.name) for s in specs)
                 for f in dataclasses.fields(body) if f.metadata.get("dynamic") == "max"}
        parts[section] = dataclasses.replace(body, **maxed)
    return Spec(**parts, source=first.source)


def run_spec(group: Spec, hparams: dict) -> Spec:
    """One run's own spec from its group's: each "max" field takes the run's value (the inverse
    of `merge_specs` for that run)."""
    parts = {}
    for section in SWEEPABLE:
        body = getattr(group, section)
        own = {f.name: hparams[section][f.name] for f in dataclasses.fields(body)
               if f.metadata.get("dynamic") == "max"}
        parts[section] = dataclasses.replace(body, **own)
    return Spec(**parts, source=group.source)


def group_key(spec: Spec) -> Spec:
    """Runs with equal group keys share array shapes (their "max" fields are merged)."""
    parts = {}
    for section in SWEEPABLE:
        body = getattr(spec, section)
        maxed = {f.name: None for f in dataclasses.fields(body) if f.metadata.get("dynamic") == "max"}
        parts[section] = dataclasses.replace(body, **maxed)
    return Spec(**parts, source=spec.source)


def hparams_of(cfg: Config) -> dict:
    """The dynamic per-run values as a nested dict of Python scalars ({'task': {...}, ...}); a
    dynamic field with string choices (`train.schedule`) is carried as its index in them."""
    out: dict = {}
    for section in SWEEPABLE:
        body = getattr(cfg, section)
        for f in dataclasses.fields(body):
            if not f.metadata.get("dynamic"):
                continue
            value = getattr(body, f.name)
            if isinstance(value, str) and f.metadata.get("choices"):
                value = f.metadata["choices"].index(value)
            out.setdefault(section, {})[f.name] = value
    return out
