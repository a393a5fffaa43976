"""`jaxsim analyze DIR` for markov_mixture: the four ICL algorithms (the compiled part in
`analysis.icl`), per run, split and saved checkpoint.

analysis.json:
    {"task", "algorithms": [4 names], "splits": ["id", "ood"], "context_lengths": [G],
     "num_sequences": B, "dominant_rule": "...", "mixture_rule": "...",
     "runs": [{"run_id", "seed", "axes": {key: value}, "steps": [S],
               "id": {"kl_model_to_alg": [S][G][4], "kl_alg_to_model": [S][G][4],
                      "mixture_weights": [S][G][4], "dominant": [S][G] (names),
                      "model_loss": [S][G], "oracle_loss": [S][G]},
               "ood": {...}}, ...]}
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import tasks
from jaxsim.analysis import icl
from jaxsim.analysis.checkpoints import chunks, group_specs, run_entry, tolist
from jaxsim.config import ConfigError, Spec


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _analyze_chunk(spec: Spec, params_RxS, seeds_R, hparams_R, num_sequences: int, split: str,
                   ends_G):
    keys = jax.vmap(jax.random.key)(seeds_R)
    return jax.vmap(icl.analyze_run, (0, 0, None, 0, None, None, None))(
        params_RxS, keys, spec, hparams_R, ends_G, num_sequences, split)



def analyze_icl(out: Path, cfg, rows, num_sequences: int, lengths: list[int] | None) -> dict:
    """analysis.json for markov_mixture; `lengths` (default ~12 log-spaced) must fit the
    shortest trained context of the sweep, since every group is analysed at the same lengths."""
    specs, _ = group_specs(cfg, rows)
    longest = min(s.task.context_length for s in specs.values()) - 1
    lengths = lengths or icl.context_lengths(longest + 1)
    bad = [v for v in lengths if not 1 <= v <= longest]
    if bad:
        raise ConfigError(f"--context-lengths {bad} out of range: allowed 1..{longest} "
                          f"(the trained context minus one)")
    ends = jnp.asarray(np.array(lengths) - 1, jnp.int32)
    splits = list(tasks.get(cfg.task.name).SPLITS)
    report = []
    for chunk in chunks(out, cfg, rows):
        per_split = {split: jax.device_get(_analyze_chunk(
            chunk.spec, chunk.params_RxS, chunk.seeds_R, chunk.hparams_R, num_sequences, split,
            ends)) for split in splits}
        for i, run in enumerate(chunk.runs):
            entry = run_entry(run, chunk.steps)
            for split, m in per_split.items():
                block = {k: tolist(v[i]) for k, v in m.items()}
                block["dominant"] = [[icl.NAMES[a] for a in row]
                                     for row in icl.dominant(np.asarray(m["kl_alg_to_model"][i]))]
                entry[split] = block
            report.append(entry)
    report.sort(key=lambda e: e["run_id"])
    return {"task": cfg.task.name, "algorithms": list(icl.NAMES), "splits": splits,
            "context_lengths": lengths, "num_sequences": num_sequences,
            "dominant_rule": "argmin over algorithms of KL(algorithm || model), mean over sequences",
            "mixture_rule": "simplex weights minimising KL(model || sum_a w_a algorithm_a)",
            "runs": report}
