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
                num_sequences: int) -> dict[str, dict[str, jax.Array]]:
    """Metrics for S checkpoints of one run on every split ({split: {name: array}}): [S, G, A]
    distances and weights, [S, G] losses. `ends_G` = context lengths - 1 (the prefix's last
    index).

    Both splits go through one program (compiling a program per split costs a second compile
    of everything but the sampler): their sequences are stacked [P=2, B, L], the model sees them
    as one batch per checkpoint, and the mixture fit runs once over every checkpoint, split and
    length (its 300 EM steps are a loop: batching them is what keeps them cheap)."""
    task = mm
    consts = task.constants(run_key, spec, hparams)
    stream = jax.random.fold_in(run_key, ANALYSIS_STREAM)
    batches = [task.sample(jax.random.fold_in(stream, task.SPLITS.index(split)), consts, spec,
                           hparams, num_sequences, split) for split in task.SPLITS]
    x_PxBxL = jnp.stack([b.tokens_BxL for b in batches])
    probs_PxBxLxK = jnp.stack([b.next_probs_BxLxK for b in batches])
    num_splits, num_seq, length = x_PxBxL.shape
    pi = stationary(consts.bank_NxKxK)
    log_w = jnp.log(consts.weights_N)  # -inf for inactive chains: zero prior
    predict = jax.vmap(predict_all, (0, None, None, None, None))
    algs_PxBxAxGxK = jax.vmap(predict, (0, None, None, None, None))(
        x_PxBxL, ends_G, consts.bank_NxKxK, pi, log_w)
    next_PxBxG = x_PxBxL[:, :, ends_G + 1]
    oracle_PxBxG = jnp.take_along_axis(probs_PxBxLxK[:, :, ends_G], next_PxBxG[..., None],
                                       -1)[..., 0]
    model = model_of(spec)

    # the model reads the sequences `train.microbatch_size` at a time (all at once without
    # one), as in training: on a CPU, activations that stay in cache ran the quickstart's
    # analysis forward passes 3x faster than one pass over all 128 sequences
    inputs_NxT = x_PxBxL.reshape(-1, length)[:, :-1]
    per_pass = spec.train.microbatch_size or inputs_NxT.shape[0]

    def one_checkpoint(params):
        def next_probs_GxK(tokens_T):
            logits_TxK = model.apply({"params": params}, tokens_T[None])[0]
            return jax.nn.softmax(logits_TxK[ends_G], axis=-1)

        probs_PxBxGxK = jax.lax.map(next_probs_GxK, inputs_NxT, batch_size=per_pass).reshape(
            num_splits, num_seq, len(ends_G), -1)
        model_vs = jax.vmap(lambda a: kl(probs_PxBxGxK, a), 2, 3)(algs_PxBxAxGxK)  # [P,B,G,A]
        vs_model = jax.vmap(lambda a: kl(a, probs_PxBxGxK), 2, 3)(algs_PxBxAxGxK)
        p_next = jnp.take_along_axis(probs_PxBxGxK, next_PxBxG[..., None], -1)[..., 0]
        return probs_PxBxGxK, {"kl_model_to_alg": model_vs.mean(1),
                               "kl_alg_to_model": vs_model.mean(1),
                               "model_loss": -jnp.log(p_next + EPS).mean(1)}

    probs_SxPxBxGxK, metrics = jax.lax.map(one_checkpoint, params_S)
    # the fit over [S, P, G] at once: targets [B, K] against the algorithms' [A, B, K]
    preds_PxGxAxBxK = jnp.transpose(algs_PxBxAxGxK, (0, 3, 2, 1, 4))
    fit = jax.vmap(jax.vmap(jax.vmap(fit_mixture), (0, 0)), (0, None))
    metrics["mixture_weights"] = fit(jnp.moveaxis(probs_SxPxBxGxK, 2, 3), preds_PxGxAxBxK)
    oracle_PxG = -jnp.log(oracle_PxBxG + EPS).mean(1)
    num_checkpoints = jax.tree.leaves(params_S)[0].shape[0]
    metrics["oracle_loss"] = jnp.broadcast_to(oracle_PxG, (num_checkpoints,) + oracle_PxG.shape)
    return {split: {name: value[:, i] for name, value in metrics.items()}
            for i, split in enumerate(task.SPLITS)}


def dominant(kl_alg_to_model: np.ndarray) -> np.ndarray:
    """Index of the closest algorithm along the last axis; -1 where a distance is not finite
    (a diverged run: no algorithm is closest)."""
    kl = np.asarray(kl_alg_to_model)
    finite = np.isfinite(kl).all(axis=-1)
    return np.where(finite, np.argmin(np.where(np.isfinite(kl), kl, np.inf), axis=-1), -1)


__all__ = ["NAMES", "analyze_run", "context_lengths", "dominant", "fit_mixture", "kl"]
