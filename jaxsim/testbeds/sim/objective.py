"""The identity objective of the structured identity mapping: (1/2) E||f(x) - x||^2 on the
held-out sample, and the model's output on the 2^s partial compositions (probes) read in concept
coordinates: the OOD point's loss and coordinates, each cluster centre's learned coordinate,
every composition's loss."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.testbed import Objective
from jaxsim.testbeds.sim.task import composition_bits
from jaxsim.training.objectives import half_sq


def bits_name(bits) -> str:
    """v in {0, 1}^s as a string, '10' = concept 1 alone."""
    return "".join(str(int(b)) for b in bits)


def eval_names(spec) -> tuple:
    """Metric names for s = `spec.task.num_concepts` concepts."""
    s = spec.task.num_concepts
    return (("eval_loss", "ood_loss", "ood_off") + tuple(f"ood_coord{p}" for p in range(1, s + 1))
            + tuple(f"centre_coord{p}" for p in range(1, s + 1))
            + tuple(f"comp_loss_{bits_name(v)}" for v in composition_bits(s)))


def _inputs(batch):
    return (jnp.concatenate([batch.x_BxD, batch.probes_VxD], axis=0),)


def _loss(out_NxD: jax.Array, batch) -> jax.Array:
    n = batch.x_BxD.shape[0]
    return half_sq(out_NxD[:n], batch.x_BxD).mean()


def _evaluate(out_NxD, batch) -> dict:
    n, s = batch.x_BxD.shape[0], batch.probe_bits_VxS.shape[1]
    probe_out_VxD = out_NxD[n:]
    coords_VxD = probe_out_VxD @ batch.rotation_DxD          # R^T f, row-wise
    comp_V = half_sq(probe_out_VxD, batch.probes_VxD)
    metrics = {"eval_loss": _loss(out_NxD, batch), "ood_loss": comp_V[-1],
               "ood_off": jnp.sqrt(jnp.sum(coords_VxD[-1, s:] ** 2))}
    for p in range(s):
        metrics[f"ood_coord{p + 1}"] = coords_VxD[-1, p]
        metrics[f"centre_coord{p + 1}"] = coords_VxD[2 ** (s - 1 - p), p]
    for v, bits in enumerate(composition_bits(s)):
        metrics[f"comp_loss_{bits_name(bits)}"] = comp_V[v]
    return metrics


OBJECTIVE = Objective(_inputs, _loss, _evaluate, eval_names)
