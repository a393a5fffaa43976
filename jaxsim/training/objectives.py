"""Loss and metric building blocks that testbeds' objectives share (no task names here).

A testbed's `Objective` (`jaxsim.testbed.Objective`) combines them: e.g. markov_mixture trains
with `lm_loss` and reports `oracle_loss`; pcfg with `masked_lm_loss` weighted by `target_count`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def lm_inputs(batch):
    """A causal LM reads every token but the last."""
    return (batch.tokens_BxL[:, :-1],)


def lm_loss(logits_BxTxV: jax.Array, batch) -> jax.Array:
    """Mean next-token cross-entropy over every position."""
    return optax.softmax_cross_entropy_with_integer_labels(
        logits_BxTxV, batch.tokens_BxL[:, 1:]).mean()


def oracle_loss(batch) -> jax.Array:
    """Cross-entropy of the true next-token distribution (`next_probs_BxLxK`) on the same
    targets."""
    probs = jnp.take_along_axis(batch.next_probs_BxLxK[:, :-1], batch.tokens_BxL[:, 1:, None], -1)
    return -jnp.log(jnp.maximum(probs, 1e-30)).mean()


def probability_mass(logits_BxTxV: jax.Array, target_probs_BxTxV: jax.Array) -> jax.Array:
    """[B, T] the model's next-token probability on the support of a target distribution."""
    support = (target_probs_BxTxV > 0).astype(logits_BxTxV.dtype)
    return jnp.sum(jax.nn.softmax(logits_BxTxV, axis=-1) * support, axis=-1)


def masked_lm_loss(logits_BxTxV: jax.Array, batch) -> jax.Array:
    """Mean cross-entropy over the targets the batch marks (`loss_mask_BxL`)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, batch.tokens_BxL[:, 1:])
    w = batch.loss_mask_BxL[:, 1:].astype(ce.dtype)
    return jnp.sum(ce * w) / jnp.maximum(w.sum(), 1.0)


def target_count(batch) -> jax.Array:
    """The normaliser of `masked_lm_loss`: the marked targets."""
    return batch.loss_mask_BxL[:, 1:].sum().astype(jnp.float32)


def masked_mse(preds_BxP: jax.Array, values_BxP: jax.Array, where_BxP: jax.Array) -> jax.Array:
    """Mean squared error over the selected entries (0 if none is selected)."""
    w = where_BxP.astype(preds_BxP.dtype)
    return jnp.sum(w * (preds_BxP - values_BxP) ** 2) / jnp.maximum(w.sum(), 1.0)


def half_sq(out_BxD: jax.Array, target_BxD: jax.Array) -> jax.Array:
    """[B] (1/2) ||f(x) - x||^2 per point."""
    return 0.5 * jnp.sum((out_BxD - target_BxD) ** 2, axis=-1)
