"""Measure trained models against the four ICL algorithms, from saved checkpoints.

For one run and a stack of its checkpoints: draw analysis sequences (from the run's training
chains, `id`, and from fresh chains, `ood`), read the model's next-state distribution after each
prefix length in a grid, and compare it with the four algorithms' predictions on the same
prefixes:
- distances: KL(model ‖ algorithm) and KL(algorithm ‖ model), averaged over the sequences. The
  prefixes end in states visited at the chain's stationary frequencies, so the average is the
  stationary-weighted row KL of the paper (weighted by the true chain's stationary distribution
  rather than by the second argument's, as the official code does);
- the dominant algorithm: smallest KL(algorithm ‖ model);
- the convex mixture of the four closest to the model: weights w on the simplex minimising
  KL(model ‖ Σ_a w_a p_a), pooled over the sequences (EM updates, which stay on the simplex);
- the model's loss and the oracle loss (true chain) on the actual next states.
Everything is pure and vmapped over runs and checkpoints.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim.testbeds.markov_mixture import task as mm
from jaxsim.testbeds.markov_mixture.algorithms import NAMES
from jaxsim.testbeds.markov_mixture.algorithms import predict_all
from jaxsim.config import Spec
from jaxsim.testbeds.markov_mixture.task import stationary
from jaxsim.training.loop import model_of

ANALYSIS_STREAM = 2000   # sub-stream of the run key for analysis sequences
PAPER_CONTEXTS = (1, 10, 40, 70, 100, 130, 160, 190, 220, 250, 280, 310, 340, 370, 400)
EPS = 1e-8


def context_lengths(context_length: int) -> list[int]:
    """Default grid: the paper's 1, 10, 40, ..., 400 when the model sees >= 400 tokens, else
    about 12 log-spaced lengths from 1 to the longest prefix with a next token (L - 1)."""
    longest = context_length - 1
    if longest >= PAPER_CONTEXTS[-1]:
        return list(PAPER_CONTEXTS)
    return sorted({int(round(v)) for v in np.geomspace(1, longest, 12)})


def kl(p_xK: jax.Array, q_xK: jax.Array) -> jax.Array:
    return jnp.sum(p_xK * (jnp.log(p_xK + EPS) - jnp.log(q_xK + EPS)), axis=-1)


def fit_mixture(target_BxK: jax.Array, preds_AxBxK: jax.Array, iters: int = 300) -> jax.Array:
    """Weights [A] on the simplex minimising mean_b KL(target_b ‖ Σ_a w_a preds_ab) (EM)."""
    num = preds_AxBxK.shape[0]

    def update(w_A, _):
        mix_BxK = jnp.einsum("a,abk->bk", w_A, preds_AxBxK)
        resp = jnp.einsum("bk,abk->a", target_BxK / (mix_BxK + EPS), preds_AxBxK)
        w_A = w_A * resp / target_BxK.shape[0]
        return w_A / w_A.sum(), None

    w, _ = jax.lax.scan(update, jnp.full((num,), 1.0 / num), None, length=iters)
    return w


def analyze_run(params_S, run_key: jax.Array, spec: Spec, hparams: dict, ends_G: jax.Array,
                num_sequences: int, split: str) -> dict[str, jax.Array]:
    """Metrics for S checkpoints of one run on one split: [S, G, A] distances and weights,
    [S, G] losses. `ends_G` = context lengths - 1 (the prefix's last index)."""
    task = mm
    consts = task.constants(run_key, spec, hparams)
    key = jax.random.fold_in(jax.random.fold_in(run_key, ANALYSIS_STREAM), task.SPLITS.index(split))
    batch = task.sample(key, consts, spec, hparams, num_sequences, split)
    x_BxL = batch.tokens_BxL
    pi = stationary(consts.bank_NxKxK)
    log_w = jnp.log(consts.weights_N)  # -inf for inactive chains: zero prior
    algs_BxAxGxK = jax.vmap(predict_all, (0, None, None, None, None))(
        x_BxL, ends_G, consts.bank_NxKxK, pi, log_w)
    next_BxG = x_BxL[:, ends_G + 1]
    oracle_BxG = jnp.take_along_axis(batch.next_probs_BxLxK[:, ends_G], next_BxG[..., None], -1)[..., 0]
    model = model_of(spec)

    def one_checkpoint(params):
        logits = model.apply({"params": params}, x_BxL[:, :-1])
        probs_BxGxK = jax.nn.softmax(logits[:, ends_G], axis=-1)
        model_vs = jax.vmap(lambda a: kl(probs_BxGxK, a), 1, 2)(algs_BxAxGxK)      # [B, G, A]
        vs_model = jax.vmap(lambda a: kl(a, probs_BxGxK), 1, 2)(algs_BxAxGxK)
        preds_GxAxBxK = jnp.transpose(algs_BxAxGxK, (2, 1, 0, 3))
        weights = jax.vmap(fit_mixture)(jnp.transpose(probs_BxGxK, (1, 0, 2)), preds_GxAxBxK)
        p_next = jnp.take_along_axis(probs_BxGxK, next_BxG[..., None], -1)[..., 0]
        return {"kl_model_to_alg": model_vs.mean(0), "kl_alg_to_model": vs_model.mean(0),
                "mixture_weights": weights, "model_loss": -jnp.log(p_next + EPS).mean(0),
                "oracle_loss": -jnp.log(oracle_BxG + EPS).mean(0)}

    return jax.lax.map(one_checkpoint, params_S)


def dominant(kl_alg_to_model: np.ndarray) -> np.ndarray:
    """Index of the closest algorithm along the last axis; -1 where a distance is not finite
    (a diverged run: no algorithm is closest)."""
    kl = np.asarray(kl_alg_to_model)
    finite = np.isfinite(kl).all(axis=-1)
    return np.where(finite, np.argmin(np.where(np.isfinite(kl), kl, np.inf), axis=-1), -1)


__all__ = ["NAMES", "analyze_run", "context_lengths", "dominant", "fit_mixture", "kl"]
