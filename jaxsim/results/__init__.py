"""The results directory: plain files that numpy / pandas / csv read without jaxsim.

    config.yaml    the fully resolved config (defaults filled in)
    plan.json      the expanded plan, written once when the sweep starts: the device count, every
                   shape group's merged static spec and chunks (their size and run ids), and every
                   run's seed, axis values and dynamic hyperparameters; resume, merge, analyze,
                   plot and activation sources read it instead of re-expanding the grid
    runs.csv       run_id, seed, one column per axis (dotted key), in a staged sweep each run's
                   source (source_dir, source_run, source_step), status, and where the run's
                   state sits in the checkpoints: shape_group, chunk, index_in_chunk
    metrics.npz    step [E]; per-run metrics [R, E] in runs.csv order (NaN where a run has no
                   evaluation at that step): train_loss and, per split, the testbed's metrics
                   named <metric>_<split> (each testbed's docs page lists them), plus the
                   testbed's aliases (markov_mixture: oracle_loss = oracle_loss_ood)
    checkpoints/   group_G/chunk_C/step_XXXXXXXX (orbax), the stacked state of a chunk's runs
    figures/       PNGs drawn from the files above
    .lock          the writer lock: the pid of the process training or analysing the directory

One module per concept: `files` (names, atomic writes, output-directory checks), `lock`,
`plan`, `tables` (runs.csv, metrics.npz, analysis.json, a run's saved state), `checkpoints`
(one chunk's step folders); every name is re-exported here (`results.read_runs`, ...), and
`is_finished` and `load_run`, which read the whole directory, live here.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from jaxsim import config as cfglib
from jaxsim.results.checkpoints import DAMAGED, STEP_DIR, ChunkCheckpoints, chunk_dir
from jaxsim.results.files import (ANALYSIS, CHECKPOINTS, CONFIG, FIGURES, LOCK, METRICS, PLAN,
                                  RUNS, atomic_write, check_config, check_writable, is_empty,
                                  make_output_dir)
from jaxsim.results.lock import writer_lock
from jaxsim.results.plan import (read_plan, spec_from_dict, spec_to_dict, write_config,
                                 write_plan)
from jaxsim.results.tables import (PLACED, SOURCE_COLUMNS, assemble, read_analysis,
                                   read_metrics, read_runs, restore_run, run_status,
                                   saved_steps, source_step, write_metrics, write_runs)

__all__ = ["ANALYSIS", "CHECKPOINTS", "CONFIG", "DAMAGED", "FIGURES", "LOCK", "METRICS", "PLACED",
           "PLAN", "RUNS", "SOURCE_COLUMNS", "STEP_DIR", "ChunkCheckpoints", "SavedRun",
           "assemble", "atomic_write", "check_config", "check_writable", "chunk_dir", "cfglib",
           "is_empty", "is_finished", "load_run", "make_output_dir", "read_analysis",
           "read_metrics", "read_plan", "read_runs", "restore_run", "run_status", "saved_steps",
           "source_step", "spec_from_dict", "spec_to_dict", "write_config", "write_metrics",
           "write_plan", "write_runs", "writer_lock"]


def is_finished(out: Path) -> bool:
    """Every run of the directory trained to its end: metrics.npz, runs.csv and plan.json
    intact, no run pending, and each chunk's last checkpoint on disk (a chunk folder deleted
    by hand is retrained by resume)."""
    out = Path(out)
    if not (out / METRICS).is_file() or not (out / RUNS).is_file():
        return False
    try:
        read_metrics(out)
        rows = read_runs(out)
        _, groups = read_plan(out)
    except cfglib.ConfigError:   # damaged: resume rebuilds it
        return False
    ids = {int(r["run_id"]) for r in rows}
    last_saved = all(g.spec.train.steps in ChunkCheckpoints(chunk_dir(out, g.index, c.index),
                                                            []).steps()
                     for g in groups for c in g.chunks if c.runs[0].run_id in ids)
    return last_saved and all(r["status"] in ("done", "diverged") for r in rows)


class SavedRun(NamedTuple):
    """One trained run of a saved sweep, as `load_run` reads it."""
    cfg: cfglib.Config    # the sweep's config
    spec: cfglib.Spec     # the run's own static spec
    hparams: dict         # its dynamic values (Python scalars)
    seed: int
    step: int             # the checkpoint step read
    params: dict          # numpy arrays


def load_run(out: Path, run_id: int, step: int | None = None) -> SavedRun:
    """A run of the sweep in `out` at a saved step (None or -1 = the last): its spec and
    hyperparameters from the plan, its parameters from its chunk's checkpoint."""
    out = Path(out)
    if not (out / CONFIG).is_file():
        raise cfglib.ConfigError(f"'{out}' is not a jaxsim results directory (no {CONFIG})")
    cfg = cfglib.load(out / CONFIG)
    runs, groups = read_plan(out)
    placed = {r.run_id: (r, g) for g in groups for r in g.runs}
    if run_id not in placed:
        raise cfglib.ConfigError(f"run {run_id} is not in {out}: runs 0..{len(runs) - 1}")
    run, group = placed[run_id]
    saved_step, state = restore_run(out, run_id, step)
    return SavedRun(cfg, cfglib.run_spec(group.spec, run.hparams), run.hparams, run.seed,
                    saved_step, jax.tree.map(np.asarray, state["params"]))
