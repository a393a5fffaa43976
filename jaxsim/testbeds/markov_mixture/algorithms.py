"""The four algorithms that explain in-context learning on a Markov mixture (Park et al. 2024).

Each function maps one sequence x_0..x_{L-1} (int [L]) and prefix ends t_1..t_G (int [G]) to the
next-state predictions after those prefixes: out[g] is the distribution of x_{t_g+1} having seen
x_0..x_{t_g} (context length t_g + 1), shape [G, K]. Cumulative sums give every prefix at once,
as a causal model's one forward pass does.

With training chains T_n, stationary distributions pi_n, mixture weights w_n and last state s:
- unigram retrieval:  post_n ∝ w_n prod_t pi_n(x_t);                     predicts sum_n post_n pi_n
- bigram retrieval:   post_n ∝ w_n pi_n(x_0) prod_t T_n(x_{t-1}, x_t);    predicts sum_n post_n T_n[s]
- bigram inference:   (c_sj + 1) / (sum_j c_sj + K), c = transition counts in the context
- unigram inference:  the stationary distribution of the add-one-smoothed bigram estimate of the
  whole context (the official code's definition: it is the unigram statistic the context implies,
  smoothed the same way as bigram inference, so the two inference algorithms differ only in
  whether they condition on s)
Posteriors are softmaxes of log-likelihoods, finite for thousands of chains and long contexts.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.testbeds.markov_mixture.task import stationary

NAMES = ("unigram_retrieval", "bigram_retrieval", "unigram_inference", "bigram_inference")
TINY = 1e-30


def _posterior(log_weights_N: jax.Array, loglik_LxN: jax.Array) -> jax.Array:
    return jax.nn.softmax(log_weights_N[None, :] + loglik_LxN, axis=-1)


def unigram_retrieval(x_L, ends_G, bank_NxKxK, pi_NxK, log_weights_N):
    loglik = jnp.cumsum(jnp.log(jnp.maximum(pi_NxK[:, x_L].T, TINY)), axis=0)     # [L, N]
    return _posterior(log_weights_N, loglik[ends_G]) @ pi_NxK


def bigram_retrieval(x_L, ends_G, bank_NxKxK, pi_NxK, log_weights_N):
    first = jnp.log(jnp.maximum(pi_NxK[:, x_L[0]], TINY))                         # [N]
    steps = jnp.log(jnp.maximum(bank_NxKxK[:, x_L[:-1], x_L[1:]].T, TINY))       # [L-1, N]
    loglik = jnp.cumsum(jnp.concatenate([first[None, :], steps], axis=0), axis=0)  # [L, N]
    post_GxN = _posterior(log_weights_N, loglik[ends_G])
    return jnp.einsum("gn,ngk->gk", post_GxN, bank_NxKxK[:, x_L[ends_G], :])


def transition_counts(x_L: jax.Array, ends_G: jax.Array, num_states: int) -> jax.Array:
    """[G, K, K]: counts[g, r, j] = #{u < t_g : x_u = r, x_{u+1} = j}."""
    onehot = jax.nn.one_hot(x_L, num_states)
    pairs = jnp.einsum("lr,lj->lrj", onehot[:-1], onehot[1:])
    cumulative = jnp.concatenate([jnp.zeros((1, num_states, num_states)),
                                  jnp.cumsum(pairs, axis=0)], axis=0)
    return cumulative[ends_G]


def smoothed_bigram(counts_xKxK: jax.Array) -> jax.Array:
    """Add-one (Dirichlet(1)) smoothed transition estimate from counts."""
    k = counts_xKxK.shape[-1]
    return (counts_xKxK + 1.0) / (counts_xKxK.sum(-1, keepdims=True) + k)


def bigram_inference(x_L, ends_G, bank_NxKxK, pi_NxK, log_weights_N):
    estimate = smoothed_bigram(transition_counts(x_L, ends_G, bank_NxKxK.shape[-1]))
    return jnp.take_along_axis(estimate, x_L[ends_G][:, None, None], axis=1)[:, 0]


def unigram_inference(x_L, ends_G, bank_NxKxK, pi_NxK, log_weights_N):
    return stationary(smoothed_bigram(transition_counts(x_L, ends_G, bank_NxKxK.shape[-1])))


ALGORITHMS = (unigram_retrieval, bigram_retrieval, unigram_inference, bigram_inference)


def predict_all(x_L, ends_G, bank_NxKxK, pi_NxK, log_weights_N) -> jax.Array:
    """[A=4, G, K] predictions of the four algorithms (order of NAMES) after each prefix."""
    return jnp.stack([f(x_L, ends_G, bank_NxKxK, pi_NxK, log_weights_N) for f in ALGORITHMS])
