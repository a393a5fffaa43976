"""The results directory: plain files that numpy / pandas / csv read without jaxsim.

    config.yaml    the fully resolved config (defaults filled in)
    runs.csv       run_id, seed, one column per axis (dotted key), status, and where the run's
                   state sits in the checkpoints: shape_group, chunk, index_in_chunk
    metrics.npz    step [E]; train_loss, eval_loss_id, eval_loss_ood, oracle_loss_id,
                   oracle_loss_ood [R, E] in runs.csv order (NaN where a run has no evaluation
                   at that step); oracle_loss = oracle_loss_ood
    checkpoints/   group_G/chunk_C/step_XXXXXXXX (orbax), the stacked state of a chunk's runs
    figures/       PNGs drawn from the files above
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from jaxsim import config as cfglib
from jaxsim.sweeps.grid import Group, Run

CONFIG, RUNS, METRICS, CHECKPOINTS, FIGURES = ("config.yaml", "runs.csv", "metrics.npz",
                                               "checkpoints", "figures")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_config(out: Path, cfg: cfglib.Config) -> None:
    _atomic_write(out / CONFIG, lambda p: p.write_text(cfglib.dump(cfg)))


def write_runs(out: Path, cfg: cfglib.Config, groups: list[Group], status: dict[int, str]) -> None:
    axes = list(cfg.sweep.axes)
    rows = []
    for group in groups:
        for chunk in group.chunks:
            for i, run in enumerate(chunk.runs):
                rows.append([run.run_id, run.seed, *[run.values[a] for a in axes],
                             status.get(run.run_id, "pending"), group.index, chunk.index, i])
    rows.sort(key=lambda r: r[0])
    header = ["run_id", "seed", *axes, "status", "shape_group", "chunk", "index_in_chunk"]

    def write(p: Path):
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    _atomic_write(out / RUNS, write)


def read_runs(out: Path) -> list[dict[str, str]]:
    with open(Path(out) / RUNS, newline="") as f:
        return list(csv.DictReader(f))


def write_metrics(out: Path, steps: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    arrays = dict(arrays)
    arrays["oracle_loss"] = arrays["oracle_loss_ood"]

    def write(p: Path):
        with open(p, "wb") as f:
            np.savez(f, step=steps, **arrays)

    _atomic_write(out / METRICS, write)


def read_metrics(out: Path) -> dict[str, np.ndarray]:
    with np.load(Path(out) / METRICS, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def chunk_dir(out: Path, group: Group, chunk_index: int) -> Path:
    return out / CHECKPOINTS / f"group_{group.index:03d}" / f"chunk_{chunk_index:03d}"


def assemble(runs: list[Run], groups: list[Group], per_chunk: dict[tuple[int, int], dict]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-chunk metrics [C, E_g] -> global step grid [E] and [R, E] arrays in run order."""
    steps = sorted({s for g in groups for s in range(g.spec.train.eval_every,
                                                     g.spec.train.steps + 1,
                                                     g.spec.train.eval_every)})
    column = {s: i for i, s in enumerate(steps)}
    names = next(iter(per_chunk.values())).keys()
    arrays = {n: np.full((len(runs), len(steps)), np.nan, np.float32) for n in names}
    for group in groups:
        cols = [column[s] for s in range(group.spec.train.eval_every, group.spec.train.steps + 1,
                                         group.spec.train.eval_every)]
        for chunk in group.chunks:
            metrics = per_chunk[group.index, chunk.index]
            for i, run in enumerate(chunk.runs):
                for n in names:
                    arrays[n][run.run_id, cols] = metrics[n][i]
    return np.array(steps, np.int64), arrays


def run_status(chunk_metrics: dict[str, np.ndarray], index: int) -> str:
    """'diverged' if any training or evaluation loss of the run is NaN or infinite, else 'done'."""
    finite = all(np.isfinite(a[index]).all() for n, a in chunk_metrics.items()
                 if n.startswith(("train", "eval")))
    return "done" if finite else "diverged"
