"""`jaxsim analyze DIR` for markov_mixture: the four ICL algorithms (the compiled part in
`analysis.icl`), per run, split and saved checkpoint.

analysis.json:
    {"task", "algorithms": [4 names], "splits": ["id", "ood"], "context_lengths": [G],
     "num_sequences": B, "dominant_rule": "...", "mixture_rule": "...",
     "runs": [{"run_id", "seed", "axes": {key: value}, "steps": [S],
               "id": {"kl_model_to_alg": [S][G][4], "kl_alg_to_model": [S][G][4],
                      "mixture_weights": [S][G][4], "dominant": [S][G] (names; "diverged"
                      where the model's distances are not finite),
                      "model_loss": [S][G], "oracle_loss": [S][G]},
               "ood": {...}}, ...]}
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from jaxsim.testbeds.markov_mixture import task as mm
from jaxsim.testbeds.markov_mixture import icl as icl
from jaxsim.analysis.driver import map_runs
from jaxsim.analysis.checkpoints import chunks, group_specs, run_entry, tolist
from jaxsim.config import ConfigError

DIVERGED = "diverged"   # the dominant "algorithm" of a cell whose model is not finite


def analyze_icl(request) -> dict:
    """analysis.json for markov_mixture; `request.context_lengths` (default ~12 log-spaced)
    must fit the shortest trained context of the sweep, since every group is analysed at the
    same lengths."""
    out, cfg, rows = request.out, request.cfg, request.rows
    num_sequences, lengths = request.num_sequences, request.context_lengths
    specs, _ = group_specs(out, rows)
    longest = min(s.task.context_length for s in specs.values()) - 1
    lengths = lengths or icl.context_lengths(longest + 1)
    bad = [v for v in lengths if not 1 <= v <= longest]
    if bad:
        raise ConfigError(f"--context-lengths {bad} out of range: allowed 1..{longest} "
                          f"(the trained context minus one)")
    ends = jnp.asarray(np.array(lengths) - 1, jnp.int32)
    splits = list(mm.SPLITS)
    report = []
    for chunk in chunks(out, rows):
        per_split = jax.device_get(map_runs(icl.analyze_run, chunk, ends, num_sequences))
        for i, run in enumerate(chunk.runs):
            entry = run_entry(run, chunk.steps, chunk.rows[i])
            for split, m in per_split.items():
                block = {k: tolist(v[i]) for k, v in m.items()}
                block["dominant"] = [[icl.NAMES[a] if a >= 0 else DIVERGED for a in row]
                                     for row in icl.dominant(np.asarray(m["kl_alg_to_model"][i]))]
                entry[split] = block
            report.append(entry)
    report.sort(key=lambda e: e["run_id"])
    return {"task": cfg.task.name, "algorithms": list(icl.NAMES), "splits": splits,
            "context_lengths": lengths, "num_sequences": num_sequences,
            "dominant_rule": "argmin over algorithms of KL(algorithm || model), mean over sequences",
            "mixture_rule": "simplex weights minimising KL(model || sum_a w_a algorithm_a)",
            "runs": report}
