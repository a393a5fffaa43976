"""`jaxsim analyze DIR`: the four-algorithm analysis of every run at every saved checkpoint.

Reads config.yaml, runs.csv and the orbax checkpoints (never re-trains); one jit(vmap) call per
chunk and split, vmapped over the chunk's runs, lax.map over its checkpoints. Writes
DIR/analysis.json:

    {"algorithms": [4 names], "splits": ["id", "ood"], "context_lengths": [G],
     "num_sequences": B, "dominant_rule": "...", "mixture_rule": "...",
     "runs": [{"run_id", "seed", "axes": {key: value}, "steps": [S],
               "id": {"kl_model_to_alg": [S][G][4], "kl_alg_to_model": [S][G][4],
                      "mixture_weights": [S][G][4], "dominant": [S][G] (names),
                      "model_loss": [S][G], "oracle_loss": [S][G]},
               "ood": {...}}, ...]}
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import config as cfglib
from jaxsim import grid, results, tasks, training
from jaxsim.analysis import icl
from jaxsim.config import ConfigError, Spec


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _analyze_chunk(spec: Spec, params_RxS, seeds_R, hparams_R, num_sequences: int, split: str,
                   ends_G):
    keys = jax.vmap(jax.random.key)(seeds_R)
    return jax.vmap(icl.analyze_run, (0, 0, None, 0, None, None, None))(
        params_RxS, keys, spec, hparams_R, ends_G, num_sequences, split)


def _group_specs(cfg: cfglib.Config, rows: list[dict]) -> tuple[dict, dict[int, grid.Run]]:
    runs = {r.run_id: r for r in grid.expand(cfg)}
    members: dict[int, list[grid.Run]] = {}
    for row in rows:
        members.setdefault(int(row["shape_group"]), []).append(runs[int(row["run_id"])])
    specs = {g: cfglib.merge_specs([cfglib.spec_of(r.config) for r in rs])
             for g, rs in members.items()}
    return specs, runs


def _finite(x):
    """JSON has no NaN/inf: map them to None."""
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x if isinstance(x, str) or math.isfinite(x) else None


def analyze(out: Path, num_sequences: int = 64, lengths: list[int] | None = None) -> Path:
    out = Path(out)
    if not (out / results.CONFIG).is_file() or not (out / results.RUNS).is_file():
        raise ConfigError(f"'{out}' is not a sweep directory (needs {results.CONFIG} and "
                          f"{results.RUNS})")
    cfg = cfglib.load(out / results.CONFIG)
    if cfg.task.name != "markov_mixture":
        raise ConfigError(f"analyze supports task.name=markov_mixture, got {cfg.task.name!r}")
    rows = results.read_runs(out)
    specs, runs = _group_specs(cfg, rows)
    longest = min(s.task.context_length for s in specs.values()) - 1
    lengths = lengths or icl.context_lengths(longest + 1)
    bad = [v for v in lengths if not 1 <= v <= longest]
    if bad:
        raise ConfigError(f"--context-lengths {bad} out of range: allowed 1..{longest} "
                          f"(the trained context minus one)")
    ends = jnp.asarray(np.array(lengths) - 1, jnp.int32)
    chunks: dict[tuple[int, int], list[dict]] = {}
    for row in rows:
        chunks.setdefault((int(row["shape_group"]), int(row["chunk"])), []).append(row)
    report = []
    for (g, c), members in sorted(chunks.items()):
        ckpt = results.ChunkCheckpoints(results.chunk_dir(out, g, c), [])
        steps = ckpt.steps()
        if not steps:
            raise ConfigError(f"no checkpoints in {ckpt.directory}; run `jaxsim resume {out}`")
        index = np.array([int(r["index_in_chunk"]) for r in members])
        states = [ckpt.restore(s, None)["state"]["params"] for s in steps]
        params_RxS = jax.tree.map(lambda *a: jnp.stack([x[index] for x in a], axis=1), *states)
        chunk_runs = [runs[int(r["run_id"])] for r in members]
        seeds = jnp.array([r.seed for r in chunk_runs], jnp.int32)
        hparams = jax.tree.map(lambda *v: jnp.stack(v),
                               *[training.as_arrays(cfglib.hparams_of(r.config)) for r in chunk_runs])
        per_split = {}
        for split in tasks.get(specs[g].task.name).SPLITS:
            per_split[split] = jax.device_get(_analyze_chunk(
                specs[g], params_RxS, seeds, hparams, num_sequences, split, ends))
        for i, run in enumerate(chunk_runs):
            entry = {"run_id": run.run_id, "seed": run.seed, "axes": run.values, "steps": steps}
            for split, m in per_split.items():
                block = {k: _finite(np.asarray(v[i], np.float64).tolist()) for k, v in m.items()}
                block["dominant"] = [[icl.NAMES[a] for a in row]
                                     for row in icl.dominant(np.asarray(m["kl_alg_to_model"][i]))]
                entry[split] = block
            report.append(entry)
    report.sort(key=lambda e: e["run_id"])
    doc = {"algorithms": list(icl.NAMES), "splits": list(per_split), "context_lengths": lengths,
           "num_sequences": num_sequences,
           "dominant_rule": "argmin over algorithms of KL(algorithm || model), mean over sequences",
           "mixture_rule": "simplex weights minimising KL(model || sum_a w_a algorithm_a)",
           "runs": report}
    path = out / results.ANALYSIS
    results.atomic_write(path, lambda p: p.write_text(json.dumps(doc)))
    return path
