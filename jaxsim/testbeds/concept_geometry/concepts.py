"""What an SAE recovers of known concepts, at every saved checkpoint.

On concept_geometry the concepts are the toy's ground truth; on activations (a trained
transformer's residual stream) the known feature is the token at each position.

For one run and a stack of its checkpoints (vmapped over runs by the caller, lax.map over
checkpoints), on `num_points` fixed analysis points drawn from the run's ground truth:
- reconstruction and sparsity: FVU, L0;
- concept recovery: per-concept best-latent F1 (latent fires <-> point belongs to the concept);
  [F, K] Pearson correlations of the latents with the ground-truth coordinates (column
  c * M + m = coordinate m of concept c, 0 off the concept) and [F, C] with concept membership,
  from which the host computes the MCC after Hungarian matching (`mcc_from_correlations`);
  per-direction max |cos| of decoder atoms to the true basis vectors (subspaces);
- adaptivity: L0 per concept beside the concept's intrinsic dimension, and their correlation
  and slope across concepts (SpaDE's claim: sparsity should track intrinsic dimension).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim.config import Spec
from jaxsim.testbeds.concept_geometry import task as cg
from jaxsim import testbeds
from jaxsim.training import sae_loop, sae_metrics

ANALYSIS_STREAM = 2000


def analyze_run(params_S, extra_S, run_key: jax.Array, spec: Spec, hparams: dict,
                num_points: int) -> dict[str, jax.Array]:
    task = testbeds.of(spec).sae
    consts = testbeds.of(spec).constants(run_key, spec, hparams)
    batch = task.sample(jax.random.fold_in(run_key, ANALYSIS_STREAM), consts, spec, hparams,
                        num_points)
    num_c = task.num_concepts(spec)
    toy = spec.task.name == "concept_geometry"
    subspaces = toy and spec.task.geometry == "subspaces"
    members = cg.indicator_targets(batch.concept_B, num_c)

    def one_checkpoint(args):
        params, extra = args
        z, x_hat = sae_loop.forward({"params": params, **extra}, batch.x_BxD, spec, hparams)
        f1_C, _ = sae_metrics.best_latent_f1(z, batch.concept_B, num_c)
        out = {"fvu": sae_metrics.fvu(batch.x_BxD, x_hat), "l0": sae_metrics.l0(z),
               "f1_per_concept": f1_C,
               "corr_concepts": sae_metrics.correlation_matrix(z, members),
               "l0_per_concept": sae_metrics.l0_per_concept(z, batch.concept_B, num_c)}
        if toy:
            out["corr_coords"] = sae_metrics.correlation_matrix(
                z, cg.coordinate_targets(batch, num_c))
        if subspaces:
            dirs, _ = cg.true_directions(consts)
            out["max_cos_per_direction"] = sae_metrics.max_cosines(params["W_dec"], dirs)
            adapt = sae_metrics.l0_vs_intrinsic_dim(z, batch.concept_B, consts.dims_C)
            out["l0_dim_corr"], out["l0_dim_slope"] = adapt["corr"], adapt["slope"]
        return out

    per_ckpt = jax.lax.map(one_checkpoint, (params_S, extra_S))
    if subspaces:
        _, valid = cg.true_directions(consts)
        per_ckpt["valid_directions"] = valid
        per_ckpt["dims"] = consts.dims_C
    return per_ckpt


def summarise(run_metrics: dict) -> dict:
    """Host side for one run: MCCs by Hungarian matching, per-checkpoint lists for JSON."""
    valid = run_metrics.get("valid_directions")
    out = {"mcc_concepts": [sae_metrics.mcc_from_correlations(c)[0]
                            for c in run_metrics["corr_concepts"]]}
    if "corr_coords" in run_metrics:
        out["mcc_coordinates"] = [sae_metrics.mcc_from_correlations(c, valid)[0]
                                  for c in run_metrics["corr_coords"]]
    for key in ("fvu", "l0", "f1_per_concept", "l0_per_concept", "l0_dim_corr", "l0_dim_slope"):
        if key in run_metrics:
            out[key] = np.asarray(run_metrics[key], np.float64).tolist()
    if "max_cos_per_direction" in run_metrics:
        cos = np.asarray(run_metrics["max_cos_per_direction"], np.float64)
        out["max_cos"] = [float(c[np.asarray(valid)].mean()) for c in cos]
        out["intrinsic_dims"] = np.asarray(run_metrics["dims"]).tolist()
    return out


FIELD_RESOLUTION = 96


def receptive_fields(params, extra, run_key: jax.Array, spec: Spec, hparams: dict,
                     num_points: int) -> dict[str, jax.Array]:
    """For a 2-D task (task.dim = 2): which latent is most active at each point of a grid over
    the data's bounding box ([G, G] index, -1 where no latent fires), the L0 there, and the
    analysis points with their concepts for the overlay."""
    task = testbeds.of(spec).sae
    consts = testbeds.of(spec).constants(run_key, spec, hparams)
    batch = task.sample(jax.random.fold_in(run_key, ANALYSIS_STREAM), consts, spec, hparams,
                        num_points)
    lo, hi = batch.x_BxD.min(0), batch.x_BxD.max(0)
    pad = 0.15 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    axis_x = jnp.linspace(lo[0], hi[0], FIELD_RESOLUTION)
    axis_y = jnp.linspace(lo[1], hi[1], FIELD_RESOLUTION)
    grid_GGx2 = jnp.stack(jnp.meshgrid(axis_x, axis_y), axis=-1)
    z, _ = sae_loop.forward({"params": params, **extra}, grid_GGx2.reshape(-1, 2), spec, hparams)
    winner = jnp.where((z != 0).any(-1), jnp.argmax(z, -1), -1)
    return {"winner": winner.reshape(FIELD_RESOLUTION, FIELD_RESOLUTION),
            "l0": (z != 0).sum(-1).reshape(FIELD_RESOLUTION, FIELD_RESOLUTION),
            "extent": jnp.stack([lo[0], hi[0], lo[1], hi[1]]),
            "points": batch.x_BxD, "concepts": batch.concept_B}
