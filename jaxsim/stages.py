"""Stages: a sweep whose runs start from the saved runs of another sweep (`init.source`).

A staged run names its source run with `init.run` (a dynamic value, so one sweep over every
pretrained seed is one compile) and the checkpoint with `init.step` (-1 = the last saved). Its
shape group's `Spec.source` is the static spec of the source shape group it starts from, and its
dynamic inputs carry the source run, frozen, as

    hparams["source"] = {"params": the source run's parameters,
                         "hparams": the source run's own dynamic hyperparameters,
                         "seed": the source run's seed}

which the objective, the testbed's constants and the analysis read like any other per-run
value. What the run does with it is its testbed's `stage`: "init" (fine-tuning: its parameters
start as the source's, the optimizer state fresh, so the architecture must match) or "frozen"
(the source is only a model the testbed reads, e.g. SAEs on its activations).
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import config as cfglib
from jaxsim import grid, results, testbeds
from jaxsim.config import Config, ConfigError, Spec
from jaxsim.program_caches import program_cache

# model keys that may differ between a fine-tuned run and its source (no parameter changes)
FREE_MODEL_KEYS = ("compute_dtype",)


def resolve(cfg: Config) -> Config:
    """Check a staged config against its source (the directory, every `init.run` value, the
    step, the architecture) and return it with `init.source` as an absolute path, so the
    sweep resumes from any working directory. A config without a source is returned as is."""
    if not cfg.init.source:
        return cfg
    if any("init.source" in axes for axes in [cfg.sweep.axes, *cfg.sweep.grids]):
        raise ConfigError("init.source cannot be a sweep axis: a staged sweep starts from one "
                          "results directory (init.run picks the runs in it)")
    path = Path(cfg.init.source).expanduser().absolute()
    if not path.exists():
        raise ConfigError(f"init.source '{cfg.init.source}' does not exist; it must be the "
                          f"results directory of a finished sweep")
    if not (path / results.CONFIG).is_file() or not (path / results.RUNS).is_file():
        raise ConfigError(f"init.source '{cfg.init.source}' is not a jaxsim results directory "
                          f"(it needs {results.CONFIG} and {results.RUNS})")
    cfg = cfglib.replace_key(cfg, "init.source", str(path))
    runs = sorted({v for axes in cfglib.grid_axes(cfg) for v in axes.get("init.run",
                                                                         [cfg.init.run])})
    for run_id in runs:
        source_spec(cfg.init, run_id)                   # the run is in the source
        results.source_step(path, run_id, cfg.init.step)   # and has the step saved
        if testbeds.of(cfg).stage == "init":
            check_architecture(cfg, run_id)
    return cfg


@functools.lru_cache(maxsize=8)
def _plan(path: str) -> dict[int, grid.Group]:
    """run_id -> its shape group in the source sweep's plan."""
    if not (Path(path) / results.CONFIG).is_file():
        raise ConfigError(f"init.source '{path}' is not a jaxsim results directory (no "
                          f"{results.CONFIG}); a staged sweep reads its source's runs")
    _, groups = results.read_plan(Path(path))
    return {r.run_id: g for g in groups for r in g.runs}


def _source_run(path: str, run_id: int) -> tuple[grid.Run, grid.Group]:
    placed = _plan(path)
    if run_id not in placed:
        raise ConfigError(f"init.run={run_id} is not a run of init.source '{path}': its runs are "
                          f"0..{len(placed) - 1}")
    group = placed[run_id]
    return next(r for r in group.runs if r.run_id == run_id), group


def source_spec(init: cfglib.InitConfig, run_id: int | None = None) -> Spec:
    """The static spec of the source shape group that holds `run_id` (default `init.run`)."""
    return _source_run(init.source, init.run if run_id is None else run_id)[1].spec


def check_architecture(cfg: Config, run_id: int) -> None:
    """A run that starts from a source run's parameters must build the same model: every
    static model key must agree (one line naming the keys that differ)."""
    source = source_spec(cfg.init, run_id).model
    static = [f.name for f in dataclasses.fields(source)
              if not f.metadata.get("dynamic") and f.name not in FREE_MODEL_KEYS]
    differ = [n for n in static if getattr(source, n) != getattr(cfg.model, n)]
    if differ:
        pairs = ", ".join(f"model.{n}={getattr(cfg.model, n)!r} (source: {getattr(source, n)!r})"
                          for n in differ)
        raise ConfigError(f"init.source: run {run_id} of '{cfg.init.source}' has another "
                          f"architecture: {pairs}; a staged run starts from the source's "
                          f"parameters, so its architecture keys must match")


@program_cache(maxsize=64)
def _chunk_params(path: str, group: int, chunk: int, step: int) -> dict:
    """A source chunk's stacked parameters at a saved step (read once per process)."""
    ckpt = results.ChunkCheckpoints(results.chunk_dir(Path(path), group, chunk), [])
    with jax.ensure_compile_time_eval():
        state = ckpt.restore(step, None)["state"]
    return jax.tree.map(np.asarray, state["params"])


def inputs(spec: Spec, runs: list[grid.Run]) -> dict:
    """The dynamic inputs of `runs` stacked along a leading run axis: their hparams
    (`grid.stack_hparams`) and, in a staged group, each run's frozen source run
    (`hparams["source"]`, see the module doc)."""
    hparams = grid.stack_hparams(runs)
    if spec.source is not None:
        hparams["source"] = frozen_runs(spec.init.source,
                                        [run.hparams["init"]["run"] for run in runs],
                                        spec.init.step)
    return hparams


def frozen_runs(path: str, run_ids: list[int], step: int) -> dict:
    """Saved runs of the sweep at `path`, stacked along a leading axis as a staged run sees its
    source: {"params" at the saved `step` (-1 = each run's last), "hparams" (the runs' own
    dynamic hyperparameters), "seed"}. The runs must share a shape group."""
    rows = {int(r["run_id"]): r for r in results.read_runs(Path(path))}
    listed: dict[tuple[int, int], list[int]] = {}   # each source chunk's saved steps, listed once
    params, sources = [], []
    for run_id in run_ids:
        source, _ = _source_run(path, run_id)
        row = rows[run_id]
        where = int(row["shape_group"]), int(row["chunk"])
        if where not in listed:
            listed[where] = results.ChunkCheckpoints(results.chunk_dir(Path(path), *where),
                                                     []).steps()
        saved = results.source_step(Path(path), run_id, step, listed[where])
        chunk = _chunk_params(path, *where, saved)
        params.append(jax.tree.map(lambda a, i=int(row["index_in_chunk"]): a[i], chunk))
        sources.append(source)
    return {"params": jax.tree.map(lambda *a: np.stack(a), *params),
            "hparams": grid.stack_hparams(sources),
            "seed": np.array([s.seed for s in sources], np.int32)}


def first_run(cfg: Config) -> tuple[Spec, dict]:
    """The static spec and dynamic inputs (arrays without a run axis) of a config's run 0 as a
    sweep of it compiles and feeds it (its shape group's spec, a staged run's frozen source
    attached): for driving `training.train` or a testbed's functions by hand."""
    cfg = resolve(cfg)
    runs = grid.expand(cfg)
    group = next(g for g in grid.plan(cfg, runs, 1) if runs[0] in g.runs)
    return group.spec, jax.tree.map(lambda a: jnp.asarray(a[0]), inputs(group.spec, runs[:1]))
