"""Loading a sweep directory for `jaxsim analyze`: its runs grouped by compile shape, each
checkpointed chunk's params at every saved step, and the JSON helpers every task's report uses.

Shared by the per-task reports (`analysis/*_report.py`); `analysis/report.py` picks the task's.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from jaxsim import grid, results, stages
from jaxsim.config import ConfigError, Spec

log = logging.getLogger(__name__)


def group_specs(out: Path, rows: list[dict]) -> tuple[dict, dict[int, grid.Run]]:
    """Each shape group's merged spec (the one training compiled, so the analysis compiles the
    same shapes) and every run of the plan by run_id (`results.read_plan`)."""
    runs, groups = results.read_plan(out)
    present = {int(row["shape_group"]) for row in rows}
    return {g.index: g.spec for g in groups if g.index in present}, {r.run_id: r for r in runs}


def finite(x):
    """JSON has no NaN/inf: map them to None."""
    if isinstance(x, list):
        return [finite(v) for v in x]
    return x if isinstance(x, str) or math.isfinite(x) else None


class ChunkParams(NamedTuple):
    spec: Spec
    runs: list                # grid.Run per member, in runs.csv order
    rows: list                # runs.csv rows of the members
    steps: list               # saved checkpoint steps
    params_RxS: dict          # params stacked [runs, steps, ...]
    seeds_R: np.ndarray
    hparams_R: dict
    extra_RxS: dict | None    # the rest of an SAE's state (aux counters and threshold,
                              # input_scale), else None


def chunks(out: Path, rows: list[dict]) -> Iterator[ChunkParams]:
    """Each checkpointed chunk's runs with their params at every saved step."""
    specs, runs = group_specs(out, rows)
    members_of: dict[tuple[int, int], list[dict]] = {}
    for row in rows:
        members_of.setdefault((int(row["shape_group"]), int(row["chunk"])), []).append(row)
    started = time.perf_counter()
    for number, ((g, c), members) in enumerate(sorted(members_of.items()), 1):
        ckpt = results.ChunkCheckpoints(results.chunk_dir(out, g, c), [])
        steps = ckpt.steps()
        if not steps:
            raise ConfigError(f"no checkpoints in {ckpt.directory}; run `jaxsim resume {out}`")
        log.info(f"jaxsim: analyze: chunk {number}/{len(members_of)} (group {g}, chunk {c}): "
                 f"{len(members)} runs x {len(steps)} saved steps "
                 f"({time.perf_counter() - started:.0f}s so far)")
        index = np.array([int(r["index_in_chunk"]) for r in members])
        states = [ckpt.restore(s, None)["state"] for s in steps]
        # on the host (numpy): as jax ops, each leaf's gather and stack was a compile of its own
        stack = lambda *a: np.stack([np.asarray(x)[index] for x in a], axis=1)
        params_RxS = jax.tree.map(stack, *[st["params"] for st in states])
        rest = [{k: v for k, v in st.items() if k not in ("params", "opt_state", "step")}
                for st in states]
        extra_RxS = jax.tree.map(stack, *rest) if rest[0] else None
        chunk_runs = [runs[int(r["run_id"])] for r in members]
        yield ChunkParams(specs[g], chunk_runs, members, steps, params_RxS,
                          np.array([r.seed for r in chunk_runs], np.int32),
                          stages.inputs(specs[g], chunk_runs), extra_RxS)


def run_entry(run, steps, row: dict | None = None) -> dict:
    """The fields every task's per-run entry starts with (so reports line up across tasks),
    with the run's `status` from its runs.csv `row` ("diverged": its numbers are not
    results)."""
    entry = {"run_id": run.run_id, "seed": run.seed, "axes": run.values, "steps": steps}
    if row is not None:
        entry["status"] = row["status"]
    return entry


def tolist(x) -> list | float:
    """An array as JSON-ready nested floats (float64 first, so no float32 digits are invented)."""
    return finite(np.asarray(x, np.float64).tolist())
