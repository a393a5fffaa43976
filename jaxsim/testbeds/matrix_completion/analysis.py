"""`jaxsim analyze DIR` for matrix_completion: plateau, diagnostics, baselines (the compiled
part in `analysis.completion`, the plateau rule in `analysis.plateau`).

analysis.json:
    {"task", "plateau_rule", "num_matrices": B,
     "runs": [{"run_id", "seed", "axes", "steps": [S],
               "plateau": {"start", "end", "length", "dropped", "plateau_loss", "final_loss",
                           "final_masked_loss", "drop_width", "copy_loss", "copy_masked_loss"},
               "diagnostics": {"mse", "observed_copy_error", "masked_error", "masked_to_mean": [S],
                               "row_score", "col_score": [S][layers][heads],
                               "probe_row_acc", "probe_col_acc": [S][layers + 1]},
               "baselines": {"copy_mse", "copy_mse_masked", "nuclear_mse", "nuclear_mse_masked",
                             "rank1_minors_mse", "rank1_minors_mse_masked" (null unless rank 1),
                             "model_mse", "model_mse_masked"},
               "attention_steps": [plateau step, final step]}, ...]}
    analysis_attention.npz: run_id [R], steps [R, 2], attention [R, 2, layers, heads, P, P],
    row_score, col_score [R, 2, layers, heads]
    (mean attention over the analysis matrices, at the last checkpoint inside the plateau and at
    the final one).
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxsim import results
from jaxsim.testbeds.matrix_completion import ATTENTION
from jaxsim.testbeds.matrix_completion import diagnostics as completion
from jaxsim.testbeds.matrix_completion import plateau as plateau
from jaxsim.analysis.driver import map_runs
from jaxsim.analysis.checkpoints import chunks, run_entry, tolist
from jaxsim.config import Spec


def _nuclear(spec: Spec, seed: int, hparams: dict, num_matrices: int) -> dict:
    """Nuclear-norm minimisation, and for a rank-1 run the 2x2-minor completion, on the run's
    analysis matrices."""
    batch = completion.analysis_batch(jax.random.key(seed), spec, hparams, num_matrices)
    out = {k: float(v) for k, v in
           completion.nuclear_norm_baseline(batch.values_BxP, batch.masked_BxP).items()}
    if int(hparams["task"]["rank"]) == 1:
        out.update({f"rank1_{k}": float(v) for k, v in
                    completion.rank1_minors_baseline(batch.values_BxP, batch.masked_BxP).items()})
    return out


def analyze_completion(out: Path, cfg, rows, num_matrices: int) -> dict:
    """analysis.json for matrix_completion (plus analysis_attention.npz); the plateau comes
    from metrics.npz, so it uses every evaluation, not only the saved checkpoints."""
    metrics = results.read_metrics(out)
    position = {int(r["run_id"]): i for i, r in enumerate(rows)}
    report, attention = [], []
    for chunk in chunks(out, rows):
        diag = jax.device_get(map_runs(completion.analyze_run, chunk, num_matrices))
        for i, run in enumerate(chunk.runs):
            r = position[run.run_id]
            found = plateau.detect(*(metrics[k][r] if k != "step" else metrics[k] for k in (
                "step", "eval_mse_id", "eval_mse_masked_id", "copy_mse_id", "copy_mse_masked_id")))
            hp = jax.tree.map(lambda a: a[i], chunk.hparams_R)
            nuclear = _nuclear(chunk.spec, run.seed, hp, num_matrices)
            steps = np.array(chunk.steps)
            inside = steps[steps < found["end"]] if found["end"] is not None else steps
            picks = [int(np.flatnonzero(steps == (inside[-1] if inside.size else steps[0]))[0]),
                     len(steps) - 1]
            attention.append(diag["attention"][i][picks])
            entry = run_entry(run, chunk.steps, chunk.rows[i])
            entry["plateau"] = found
            entry["diagnostics"] = {k: tolist(v[i]) for k, v in diag.items() if k != "attention"}
            entry["baselines"] = {"copy_mse": found["copy_loss"],
                                  "copy_mse_masked": found["copy_masked_loss"],
                                  "nuclear_mse": nuclear["mse"],
                                  "nuclear_mse_masked": nuclear["mse_masked"],
                                  "rank1_minors_mse": nuclear.get("rank1_mse"),
                                  "rank1_minors_mse_masked": nuclear.get("rank1_mse_masked"),
                                  "model_mse": float(diag["mse"][i][-1]),
                                  "model_mse_masked": float(diag["masked_error"][i][-1])}
            entry["attention_steps"] = [int(steps[p]) for p in picks]
            report.append(entry)
    order = np.argsort([e["run_id"] for e in report])
    report = [report[i] for i in order]
    maps = np.stack([attention[i] for i in order])          # [R, 2, layers, heads, P, P]
    n = cfg.task.matrix_size
    scores = np.array([[[np.asarray(completion.row_col_scores(m, n)) for m in per_time]
                        for per_time in run] for run in maps])   # [R, 2, layers, 2, heads]

    def write(path: Path):
        with open(path, "wb") as f:
            np.savez(f, run_id=np.array([e["run_id"] for e in report]),
                     steps=np.array([e["attention_steps"] for e in report]), attention=maps,
                     row_score=scores[:, :, :, 0], col_score=scores[:, :, :, 1])

    results.atomic_write(out / ATTENTION, write)
    return {"task": cfg.task.name, "plateau_rule": plateau.RULE, "num_matrices": num_matrices,
            "diagnostics_matrices": "fixed per run (analysis stream of its key)", "runs": report}
