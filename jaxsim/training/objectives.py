"""What a model is trained to do on a task's batch: its inputs, its loss, its evaluation metrics.

One objective per task family, so the training loop stays task-agnostic:
- `next_token` (markov_mixture): causal LM cross-entropy; evaluated against the oracle (the
  true next-token distribution's loss on the same targets).
  graph_walk adds the neighbour-probability "accuracy" of the in-context graph and of the
  run's fixed pretraining map.
- `masked_regression` (matrix_completion): MSE over all n^2 entries (the paper's loss), with the
  masked and observed entries also reported apart, and the copy baseline (observed entries
  copied, 0 = the mean predicted for masked ones) on the same matrices.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class Objective(NamedTuple):
    inputs: Callable        # batch -> positional model inputs
    loss: Callable          # (outputs, batch) -> scalar training loss
    evaluate: Callable      # (outputs, batch) -> {name: scalar}, names as in `eval_names`
    eval_names: tuple       # metric names (the loop appends _{split})


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


OBJECTIVES = {
    "markov_mixture": Objective(_lm_inputs, _lm_loss, _lm_evaluate, ("eval_loss", "oracle_loss")),
    "matrix_completion": Objective(_mlm_inputs, _mse, _mlm_evaluate,
                                   ("eval_mse", "eval_mse_masked", "eval_mse_observed",
                                    "copy_mse", "copy_mse_masked")),
    "graph_walk": Objective(_lm_inputs, _lm_loss, _graph_evaluate,
                            ("eval_loss", "oracle_loss", "neighbor_acc", "prior_acc")),
}

# The metric pair a loss-curve figure draws per split: (model, reference level).
CURVES = {"markov_mixture": ("eval_loss", "oracle_loss"),
          "matrix_completion": ("eval_mse", "copy_mse"),
          "graph_walk": ("eval_loss", "oracle_loss")}


def get(task_name: str) -> Objective:
    return OBJECTIVES[task_name]
