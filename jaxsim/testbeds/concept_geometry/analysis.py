"""`jaxsim analyze DIR` for concept_geometry and activations: what each SAE recovers (the
compiled part in `analysis.concepts`; activations adds the causal probes of `analysis.causal`).

analysis.json:
    {"task", "num_points", "mcc_rule",
     "runs": [{"run_id", "seed", "axes", "steps": [S], "fvu", "l0": [S],
               "mcc_coordinates", "mcc_concepts": [S], "f1_per_concept", "l0_per_concept": [S][C],
               subspaces only: "max_cos", "l0_dim_corr", "l0_dim_slope": [S],
               "intrinsic_dims": [C]}, ...]}
    activations adds (`analysis/causal.py`, final checkpoint) a top-level "causal": {"features",
    "feature_sizes", "sequences", "positions_per_sequence", "rule"} and per run "causal":
    {"step", "recon_kl", per feature name: {"count", "best_latent", "corr", "f1", "auc",
     "clamp": [V], "ordinal_corr", "ordinal_latent", "expected_fit", "points",
     "probe", "control", "patch", "base": {"kl", "shift", "success"}}};
    with task.dim = 2, analysis_fields.npz: run_id [R], winner [R, G, G] (most active latent at
    each grid point, -1 = none), l0 [R, G, G], extent [R, 4], points [R, B, 2], concepts [R, B]
    (final checkpoint).
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxsim import results
from jaxsim.testbeds.concept_geometry import FIELDS
from jaxsim.testbeds.activations import probes as causal
from jaxsim.testbeds.concept_geometry import concepts as concepts
from jaxsim.analysis.driver import map_runs
from jaxsim.analysis.checkpoints import chunks, finite, run_entry
from jaxsim.testbeds.activations import source as activations


def analyze_concepts(out: Path, cfg, rows, num_points: int) -> dict:
    """analysis.json for concept_geometry and activations (plus analysis_fields.npz when
    task.dim = 2); the causal probes and receptive fields use the final checkpoint only."""
    report, fields, probes, spec = [], [], {}, None
    for chunk in chunks(out, rows):
        spec = chunk.spec
        m = jax.device_get(map_runs(concepts.analyze_run, chunk, num_points, extra=True))
        if cfg.task.name == "activations":
            c = jax.device_get(map_runs(causal.analyze_run, chunk,
                                        causal.num_sequences(chunk.spec, num_points), extra=True,
                                        last=True))
            probes.update({run.run_id: dict(causal.summarise(jax.tree.map(lambda a: a[i], c)),
                                            step=chunk.steps[-1])
                           for i, run in enumerate(chunk.runs)})
        if chunk.spec.task.dim == 2:
            f = jax.device_get(map_runs(concepts.receptive_fields, chunk, num_points, extra=True,
                                        last=True))
            fields += [(run.run_id, jax.tree.map(lambda a: a[i], f))
                       for i, run in enumerate(chunk.runs)]
        for i, run in enumerate(chunk.runs):
            entry = run_entry(run, chunk.steps, chunk.rows[i])
            entry.update(concepts.summarise(jax.tree.map(lambda a: a[i], m)))
            if run.run_id in probes:
                entry["causal"] = probes[run.run_id]
            report.append({k: finite(v) if isinstance(v, list) else v for k, v in entry.items()})
    report.sort(key=lambda e: e["run_id"])
    if fields:
        fields.sort(key=lambda t: t[0])

        def write(path: Path):
            with open(path, "wb") as fh:
                np.savez(fh, run_id=np.array([r for r, _ in fields]),
                         **{k: np.stack([f[k] for _, f in fields]) for k in fields[0][1]})

        results.atomic_write(out / FIELDS, write)
    extra = {}
    if probes:
        extra["causal"] = {"features": activations.feature_names(spec),
                           "feature_sizes": activations.feature_sizes(spec),
                           "sequences": causal.num_sequences(spec, num_points),
                           "positions_per_sequence": causal.POSITIONS, "rule": causal.RULE}
    return {"task": cfg.task.name, "num_points": num_points, **extra,
            "mcc_rule": "mean |Pearson corr| of latents with ground-truth variables after a "
                        "Hungarian one-to-one matching (coordinates: concept-c coordinate m, 0 "
                        "off the concept; concepts: membership indicators)",
            "runs": report}
