"""Expand a config into its runs table and group the runs by compile-time shape."""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

import jax
import numpy as np

from jaxsim import config as cfglib
from jaxsim.config import Config, Spec


@dataclass(frozen=True)
class Run:
    run_id: int
    seed: int
    values: dict            # axis key -> this run's value
    hparams: dict           # its dynamic values {"task": {...}, "model": {...}, "train": {...}}
    config: Config | None = None   # the run's own resolved config (None when read from plan.json)


@dataclass
class Chunk:
    """Runs trained by one call of the compiled program (padded to `size` with repeats)."""
    index: int
    runs: list[Run]
    size: int

    @property
    def name(self) -> str:
        return f"chunk_{self.index:03d}"


@dataclass
class Group:
    """Runs that share array shapes: one compile, trained in chunks."""
    index: int
    spec: Spec
    runs: list[Run] = field(default_factory=list)
    chunks: list[Chunk] = field(default_factory=list)


def expand(cfg: Config) -> list[Run]:
    """Product of the axes (in config order) times the seeds (innermost); with `sweep.grids`,
    the union over grids of the product of sweep.axes and the grid's axes. A run's `values` hold
    every swept key (a key its grid does not set keeps the base config's value)."""
    keys = cfglib.axis_keys(cfg)
    runs = []
    for axes in cfglib.grid_axes(cfg):
        for combo in itertools.product(*axes.values()):
            run_cfg = cfg
            set_here = dict(zip(axes, combo))
            for key, value in set_here.items():
                run_cfg = cfglib.replace_key(run_cfg, key, value)
            run_cfg = cfglib.resolve(run_cfg)
            where = "sweep combination " + ", ".join(f"{k}={v!r}" for k, v in set_here.items())
            cfglib.check_consistency(run_cfg, where=where + ": " if set_here else "")
            values = {k: set_here[k] if k in set_here else _value(run_cfg, k) for k in keys}
            hparams = cfglib.hparams_of(run_cfg)
            for seed in range(cfg.sweep.seeds):
                runs.append(Run(len(runs), seed, values, hparams, run_cfg))
    return runs


def _value(cfg: Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def plan(cfg: Config, runs: list[Run], num_devices: int,
         sizes: dict[int, int] | None = None) -> list[Group]:
    """Group runs by shape; split each group into equal chunks whose size divides by devices.

    Chunk size: `sizes[group index]` when given (as fitted to the memory budget, or as recorded
    in runs.csv on resume), else `sweep.chunk_size` (0 = the whole group)."""
    by_key: dict[Spec, list[Run]] = {}
    for run in runs:
        by_key.setdefault(cfglib.group_key(_spec(run)), []).append(run)
    groups = []
    for index, members in enumerate(by_key.values()):
        spec = cfglib.merge_specs([_spec(r) for r in members])
        size = (sizes or {}).get(index) or cfg.sweep.chunk_size or len(members)
        size = min(size, len(members))
        size = round_to_devices(size, num_devices)
        chunks = [Chunk(i, members[start:start + size], size)
                  for i, start in enumerate(range(0, len(members), size))]
        groups.append(Group(index, spec, members, chunks))
    return groups


def _spec(run: Run) -> Spec:
    """A run's static spec; in a staged sweep with the static spec of its source run's shape
    group (runs from different source groups compile apart)."""
    spec = cfglib.spec_of(run.config)
    if run.config.init.source:
        from jaxsim import stages   # stages reads saved sweeps (results imports this module)
        spec = dataclasses.replace(spec, source=stages.source_spec(run.config.init))
    return spec


def round_to_devices(size: int, num_devices: int) -> int:
    """`size` rounded up to a multiple of the device count: a chunk is sharded evenly over the
    devices (its extra slots are padded with repeats of its runs)."""
    return math.ceil(size / num_devices) * num_devices


def recorded_sizes(rows: list[dict]) -> dict[int, int]:
    """Each shape group's chunk size as runs.csv records it (the runs in its first chunk)."""
    sizes: dict[int, int] = {}
    for row in rows:
        if int(row["chunk"]) == 0:
            group = int(row["shape_group"])
            sizes[group] = sizes.get(group, 0) + 1
    return sizes


def save_steps(cfg: Config, spec: Spec) -> list[int]:
    """Checkpoint steps kept for analysis, on evaluation boundaries, always with the last step.

    `sweep.save_steps: null` gives ~20 log-spaced steps from the first evaluation to the end.
    """
    every, total = spec.train.eval_every, spec.train.steps
    if cfg.sweep.save_steps is None:
        count = 20
        lo, hi = math.log(every), math.log(total)
        raw = [math.exp(lo + (hi - lo) * i / (count - 1)) for i in range(count)] if total > every else [total]
    else:
        raw = [s for s in cfg.sweep.save_steps if s <= total]
    rounded = {min(total, max(every, every * round(s / every))) for s in raw}
    return sorted(rounded | {total})


def stack_hparams(runs: list[Run]) -> dict:
    """The runs' dynamic hparams stacked along a leading run axis (int -> int32, float ->
    float32): the vmapped `hparams` pytree of a chunk."""
    per_run = [r.hparams for r in runs]

    def stack(*values):
        dtype = np.int32 if isinstance(values[0], int) else np.float32
        return np.asarray(values, dtype)

    return jax.tree.map(stack, *per_run)
