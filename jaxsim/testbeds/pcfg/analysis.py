"""`jaxsim analyze DIR` for pcfg: grammaticality of the models' own samples (the compiled
part in `analysis.grammaticality`, checked again on the host by `analysis.earley`).

analysis.json:
    {"task", "num_samples", "checker",
     "runs": [{"run_id", "seed", "axes", "grammar", "steps": [S], "grammatical", "finished",
               "legal_tokens",
               "mean_length": [S], "grammar_mean_length", "earley_agreement"}, ...]}
    analysis_samples.npz: run_id [R], grammar [R] (str), samples [R, B, L] (final checkpoint,
    temperature 1, PAD-padded to the longest context),
    grammar_lengths [R, B] (exact samples of the grammar under the same cap), grammatical [R, B]
    (the Earley parser's verdict on each sample), sample_lengths [R, B] (words between BOS and
    the first EOS; -1 without them).
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxsim import results
from jaxsim.testbeds.pcfg import SAMPLES
from jaxsim.testbeds.pcfg import earley as earley
from jaxsim.testbeds.pcfg import grammaticality as grammaticality
from jaxsim.analysis.driver import map_runs
from jaxsim.analysis.checkpoints import chunks, run_entry, tolist


def analyze_pcfg(out: Path, cfg, rows, num_samples: int) -> dict:
    """analysis.json for pcfg (plus analysis_samples.npz of the final checkpoint's samples,
    which the figures re-parse)."""
    report, samples = [], []
    for chunk in chunks(out, rows):
        m = jax.device_get(map_runs(grammaticality.analyze_run, chunk, num_samples))
        for i, run in enumerate(chunk.runs):
            entry = run_entry(run, chunk.steps, chunk.rows[i])
            entry.update({k: tolist(m[k][i]) for k in grammaticality.METRICS})
            entry["grammar_mean_length"] = float(m["grammar_mean_length"][i])
            final, grammar = m["samples"][i], chunk.spec.task.grammar
            entry["grammar"] = grammar
            host = np.array([earley.is_grammatical(grammar, s) for s in final])
            entry["earley_agreement"] = float(np.mean(host == m["samples_grammatical"][i]))
            report.append(entry)
            words = [earley.sentence_of(s) for s in final]
            lengths = np.array([-1 if w is None else len(w) for w in words])
            samples.append((run.run_id, grammar, final, m["grammar_lengths"][i], host, lengths))
    report.sort(key=lambda e: e["run_id"])
    samples.sort(key=lambda t: t[0])
    width = max(t[2].shape[1] for t in samples)
    pad = lambda s: np.pad(s, ((0, 0), (0, width - s.shape[1])))    # PAD = 0

    def write(path: Path):
        with open(path, "wb") as fh:
            np.savez(fh, run_id=np.array([t[0] for t in samples]),
                     grammar=np.array([t[1] for t in samples]),
                     samples=np.stack([pad(t[2]) for t in samples]),
                     grammar_lengths=np.stack([t[3] for t in samples]),
                     grammatical=np.stack([t[4] for t in samples]),
                     sample_lengths=np.stack([t[5] for t in samples]))

    results.atomic_write(out / SAMPLES, write)
    return {"task": cfg.task.name, "num_samples": num_samples,
            "checker": "exact jax recogniser per grammar; earley_agreement = share of the final "
                       "checkpoint's samples on which the plain-Python Earley parser agrees",
            "runs": report}
