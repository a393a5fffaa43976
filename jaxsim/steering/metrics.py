"""Likelihood-based steering metrics, referenced to the unsteered model.

For a prompt with continuations a (matching) and b (non-matching), let
lo = log p(a | prompt) - log p(b | prompt), summed over the continuation's tokens, under the
steered model and lo_0 under the unsteered one. Per prompt:

- delta = lo - lo_0 (nats): the baseline-referenced change of the log-odds of the behaviour;
- shift = sigmoid(lo) - sigmoid(lo_0): the probability mass moved toward the behaviour, with the
  two continuations' probabilities normalised to sum to one (comparable across behaviours and
  continuation lengths; in [-1, 1]);
- toward: whether delta has the intended sign (> 0 promoting, < 0 suppressing).

Means and standard errors are over the valid prompts. The side effect is the testbed's own
training loss on its held-out batch, steered minus unsteered.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.steering.methods import Intervention


def continuation_logprob(logits_BxTxV: jax.Array, tokens_BxT: jax.Array,
                         target_BxT: jax.Array) -> jax.Array:
    """[B] log-likelihood of the tokens at the target positions, each given the ones before."""
    logp = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, tokens_BxT[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(target_BxT[:, 1:], picked, 0.0), axis=1)


def steering_edit(iv: Intervention, scale: jax.Array):
    """The model's `edit(site, x)` adding `scale` times the intervention at its layer."""
    def edit(site: str, x: jax.Array) -> jax.Array:
        if site.startswith("block"):
            on = (iv.layer == int(site[5:])) * scale
            return x + on * iv.resid_C[None, None, :].astype(x.dtype)
        if site.startswith("heads"):
            on = (iv.layer == int(site[5:])) * scale
            return x + on * iv.heads_HxD[None, None].astype(x.dtype)
        return x
    return edit


def log_odds(model, params: dict, contrast, edit=None) -> jax.Array:
    """[B] lo = log p(matching) - log p(non-matching) under the (edited) model."""
    def lp(tokens):
        logits = model.apply({"params": params}, tokens, edit=edit)
        return continuation_logprob(logits, tokens, contrast.target_BxT)
    return lp(contrast.match_BxT) - lp(contrast.nonmatch_BxT)


def _mean_se(x_B: jax.Array, valid_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    w = valid_B.astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    mean = jnp.sum(w * x_B) / n
    var = jnp.sum(w * (x_B - mean) ** 2) / jnp.maximum(n - 1.0, 1.0)
    return mean, jnp.sqrt(var / n)


def summarize(lo_B: jax.Array, lo0_B: jax.Array, valid_B: jax.Array, sign: jax.Array) -> dict:
    """The per-prompt metrics (module doc) averaged over the valid prompts; `sign` = +1 for
    promoting, -1 for suppressing."""
    delta = lo_B - lo0_B
    shift = jax.nn.sigmoid(lo_B) - jax.nn.sigmoid(lo0_B)
    delta_mean, delta_se = _mean_se(delta, valid_B)
    shift_mean, shift_se = _mean_se(shift, valid_B)
    toward, _ = _mean_se((sign * delta > 0).astype(jnp.float32), valid_B)
    return {"delta": delta_mean, "delta_se": delta_se, "shift": shift_mean,
            "shift_se": shift_se, "toward": toward, "log_odds": _mean_se(lo_B, valid_B)[0]}
