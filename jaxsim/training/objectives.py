"""What a model is trained to do on a task's batch: its inputs, its loss, its evaluation metrics.

One objective per task family, so the training loop stays task-agnostic:
- `next_token` (markov_mixture): causal LM cross-entropy; evaluated against the oracle (the
  true next-token distribution's loss on the same targets).
  graph_walk adds the neighbour-probability "accuracy" of the in-context graph and of the
  run's fixed pretraining map.
- `masked_next_token` (pcfg): causal LM cross-entropy over the sentence and EOS targets only
  (padding ignored); evaluated by the model's probability mass on the legal next tokens.
- `masked_regression` (matrix_completion): MSE over all n^2 entries (the paper's loss), with the
  masked and observed entries also reported apart, and the copy baseline (observed entries
  copied, 0 = the mean predicted for masked ones) on the same matrices.
- `identity` (sim): (1/2) E||f(x) - x||^2 on the held-out sample, and the model's output on the
  2^s partial compositions (probes) read in concept coordinates: the OOD point's loss and
  coordinates, each cluster centre's learned coordinate, every composition's loss.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsim.tasks.sim import composition_bits


class Objective(NamedTuple):
    inputs: Callable        # batch -> positional model inputs
    loss: Callable          # (outputs, batch) -> scalar training loss
    evaluate: Callable      # (outputs, batch) -> {name: scalar}, names as in `eval_names`
    eval_names: tuple       # metric names (the loop appends _{split})
    # the loss's normaliser on a batch, when it is not the number of examples (pcfg: the target
    # tokens): microbatches are weighted by it so their mean equals the whole batch's loss
    weight: Callable | None = None


def _lm_inputs(batch):
    return (batch.tokens_BxL[:, :-1],)


def _lm_loss(logits_BxTxV: jax.Array, batch) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(
        logits_BxTxV, batch.tokens_BxL[:, 1:]).mean()


def oracle_loss(batch) -> jax.Array:
    """Cross-entropy of the true next-token distribution on the same targets."""
    probs = jnp.take_along_axis(batch.next_probs_BxLxK[:, :-1], batch.tokens_BxL[:, 1:, None], -1)
    return -jnp.log(jnp.maximum(probs, 1e-30)).mean()


def _lm_evaluate(logits, batch) -> dict:
    return {"eval_loss": _lm_loss(logits, batch), "oracle_loss": oracle_loss(batch)}


def probability_mass(logits_BxTxV: jax.Array, target_probs_BxTxV: jax.Array) -> jax.Array:
    """[B, T] the model's next-token probability on the support of a target distribution
    (graph_walk: the valid neighbours' tokens — the paper's "accuracy")."""
    support = (target_probs_BxTxV > 0).astype(logits_BxTxV.dtype)
    return jnp.sum(jax.nn.softmax(logits_BxTxV, axis=-1) * support, axis=-1)


def _graph_evaluate(logits, batch) -> dict:
    """Next-token loss, oracle loss, neighbour mass under the context's graph and under the run's
    fixed ("pretraining") map, each averaged over all positions."""
    return {"eval_loss": _lm_loss(logits, batch), "oracle_loss": oracle_loss(batch),
            "neighbor_acc": probability_mass(logits, batch.next_probs_BxLxK[:, :-1]).mean(),
            "prior_acc": probability_mass(logits, batch.prior_probs_BxLxK[:, :-1]).mean()}


def _mlm_inputs(batch):
    return (batch.tokens_BxP, batch.values_BxP)


def _mse(preds_BxP: jax.Array, batch) -> jax.Array:
    return jnp.mean((preds_BxP - batch.values_BxP) ** 2)


def masked_mse(preds_BxP: jax.Array, values_BxP: jax.Array, where_BxP: jax.Array) -> jax.Array:
    """Mean squared error over the selected entries (0 if none is selected)."""
    w = where_BxP.astype(preds_BxP.dtype)
    return jnp.sum(w * (preds_BxP - values_BxP) ** 2) / jnp.maximum(w.sum(), 1.0)


def copy_baseline(batch) -> jax.Array:
    """[B, P] the plateau solution: observed entries copied, masked ones predicted as 0."""
    return jnp.where(batch.masked_BxP, 0.0, batch.values_BxP)


def _mlm_evaluate(preds, batch) -> dict:
    return {"eval_mse": _mse(preds, batch),
            "eval_mse_masked": masked_mse(preds, batch.values_BxP, batch.masked_BxP),
            "eval_mse_observed": masked_mse(preds, batch.values_BxP, ~batch.masked_BxP),
            "copy_mse": _mse(copy_baseline(batch), batch),
            "copy_mse_masked": masked_mse(copy_baseline(batch), batch.values_BxP, batch.masked_BxP)}


def _sim_inputs(batch):
    return (jnp.concatenate([batch.x_BxD, batch.probes_VxD], axis=0),)


def _half_sq(out_BxD: jax.Array, target_BxD: jax.Array) -> jax.Array:
    """[B] (1/2) ||f(x) - x||^2 per point."""
    return 0.5 * jnp.sum((out_BxD - target_BxD) ** 2, axis=-1)


def _sim_loss(out_NxD: jax.Array, batch) -> jax.Array:
    n = batch.x_BxD.shape[0]
    return _half_sq(out_NxD[:n], batch.x_BxD).mean()


def bits_name(bits) -> str:
    """v in {0, 1}^s as a string, '10' = concept 1 alone."""
    return "".join(str(int(b)) for b in bits)


def sim_eval_names(spec) -> tuple:
    """Metric names of the identity objective for s = `spec.task.num_concepts` concepts."""
    s = spec.task.num_concepts
    return (("eval_loss", "ood_loss", "ood_off") + tuple(f"ood_coord{p}" for p in range(1, s + 1))
            + tuple(f"centre_coord{p}" for p in range(1, s + 1))
            + tuple(f"comp_loss_{bits_name(v)}" for v in composition_bits(s)))


def _sim_evaluate(out_NxD, batch) -> dict:
    n, s = batch.x_BxD.shape[0], batch.probe_bits_VxS.shape[1]
    probe_out_VxD = out_NxD[n:]
    coords_VxD = probe_out_VxD @ batch.rotation_DxD          # R^T f, row-wise
    comp_V = _half_sq(probe_out_VxD, batch.probes_VxD)
    metrics = {"eval_loss": _sim_loss(out_NxD, batch), "ood_loss": comp_V[-1],
               "ood_off": jnp.sqrt(jnp.sum(coords_VxD[-1, s:] ** 2))}
    for p in range(s):
        metrics[f"ood_coord{p + 1}"] = coords_VxD[-1, p]
        metrics[f"centre_coord{p + 1}"] = coords_VxD[2 ** (s - 1 - p), p]
    for v, bits in enumerate(composition_bits(s)):
        metrics[f"comp_loss_{bits_name(bits)}"] = comp_V[v]
    return metrics


def _masked_lm_loss(logits_BxTxV: jax.Array, batch) -> jax.Array:
    """Mean cross-entropy over the targets the batch marks (sentence tokens and EOS)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, batch.tokens_BxL[:, 1:])
    w = batch.loss_mask_BxL[:, 1:].astype(ce.dtype)
    return jnp.sum(ce * w) / jnp.maximum(w.sum(), 1.0)


def _target_count(batch) -> jax.Array:
    return batch.loss_mask_BxL[:, 1:].sum().astype(jnp.float32)


def legal_mass(logits_BxTxV: jax.Array, batch) -> jax.Array:
    """Mean over target positions of the model's probability on the legal next tokens."""
    probs = jax.nn.softmax(logits_BxTxV, axis=-1)
    legal = jnp.sum(probs * batch.legal_next_BxLxV[:, :-1].astype(probs.dtype), axis=-1)
    w = batch.loss_mask_BxL[:, 1:].astype(probs.dtype)
    return jnp.sum(legal * w) / jnp.maximum(w.sum(), 1.0)


def _pcfg_evaluate(logits, batch) -> dict:
    return {"eval_loss": _masked_lm_loss(logits, batch), "legal_mass": legal_mass(logits, batch)}


OBJECTIVES = {
    "markov_mixture": Objective(_lm_inputs, _lm_loss, _lm_evaluate, ("eval_loss", "oracle_loss")),
    "matrix_completion": Objective(_mlm_inputs, _mse, _mlm_evaluate,
                                   ("eval_mse", "eval_mse_masked", "eval_mse_observed",
                                    "copy_mse", "copy_mse_masked")),
    "sim": Objective(_sim_inputs, _sim_loss, _sim_evaluate, sim_eval_names),
    "pcfg": Objective(_lm_inputs, _masked_lm_loss, _pcfg_evaluate, ("eval_loss", "legal_mass"),
                      _target_count),
    "graph_walk": Objective(_lm_inputs, _lm_loss, _graph_evaluate,
                            ("eval_loss", "oracle_loss", "neighbor_acc", "prior_acc")),
}

# The metric pair a loss-curve figure draws per split: (model, reference level).
CURVES = {"markov_mixture": ("eval_loss", "oracle_loss"),
          "matrix_completion": ("eval_mse", "copy_mse"),
          "sim": ("eval_loss", "ood_loss"),
          "pcfg": ("eval_loss", None),
          "graph_walk": ("eval_loss", "oracle_loss")}


def get(task_name: str) -> Objective:
    return OBJECTIVES[task_name]
