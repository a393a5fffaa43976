"""A finite mixture of Markov chains (Park, Lubana, Pres, Tanaka 2024).

A run's training chains are a bank of ``spec.task.num_chains`` (the group maximum) transition
matrices; chain ``n`` is drawn from ``fold_in(chains_key, n)``, so it does not depend on the bank
size, and only the first ``hparams['task']['num_chains']`` are active. Every random draw that
depends on the number of chains goes through inverse-CDF sampling on per-index quantities, so a
run gives the same sequences whether it is compiled alone or in a group with a bigger bank.

All functions are pure and jittable; shapes in names: B batch, L context, K states, N bank.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsim.config import Spec
from jaxsim.testbeds import streams as streams

# Sub-streams of a run's key. Chains are fixed per seed; the training stream folds in the step.
CHAINS, WEIGHTS, TRAIN_STREAM, EVAL_ID, EVAL_OOD = range(5)

SPLITS = ("id", "ood")


class Batch(NamedTuple):
    tokens_BxL: jax.Array        # int32 states
    next_probs_BxLxK: jax.Array  # true next-state distribution T[x_t] at every position
    chain_B: jax.Array           # index of the generating chain (-1 for fresh chains)


def sample_chains(key: jax.Array, num_chains: int, num_states: int, alpha: jax.Array) -> jax.Array:
    """[N, K, K] row-stochastic matrices, rows ~ Dirichlet(alpha); chain n from fold_in(key, n)."""
    conc_K = jnp.full((num_states,), alpha, jnp.float32)

    def one(n):
        return jax.random.dirichlet(jax.random.fold_in(key, n), conc_K, shape=(num_states,))

    return jax.vmap(one)(jnp.arange(num_chains))


def stationary(transition_NxKxK: jax.Array, squarings: int = 40) -> jax.Array:
    """[..., K] stationary distributions of row-stochastic [..., K, K] matrices.

    Repeated squaring of the lazy chain (T + I) / 2 (same stationary distribution, aperiodic):
    after m squarings every row of the matrix is the state distribution after 2^m steps from that
    row's state, so for an irreducible chain all rows equal pi up to float rounding. Pure matmuls:
    no LAPACK call, because jax 0.10's batched CPU LU custom call deadlocks in a 2-thread pool when
    it runs inside a vmapped, multi-threaded program (seen in `jaxsim analyze`).
    """
    k = transition_NxKxK.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(k, dtype=transition_NxKxK.dtype), transition_NxKxK.shape)
    lazy = 0.5 * (transition_NxKxK + eye)

    def square(p, _):
        p = p @ p
        return p / p.sum(-1, keepdims=True), None

    power, _ = jax.lax.scan(square, lazy, None, length=squarings)
    pi = power.mean(-2)
    return pi / pi.sum(-1, keepdims=True)


def mixture_weights(key: jax.Array, spec: Spec, hparams: dict) -> jax.Array:
    """[N] unnormalised mixture weights, zero for inactive chains."""
    n = spec.task.num_chains
    active = jnp.arange(n) < hparams["task"]["num_chains"]
    if spec.task.weights == "uniform":
        raw = jnp.ones((n,), jnp.float32)
    else:
        raw = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i)))(jnp.arange(n))
    return jnp.where(active, raw, 0.0)


def inverse_cdf(weights_xK: jax.Array, u_x: jax.Array) -> jax.Array:
    """Index drawn from unnormalised `weights` (last axis) with uniforms `u` (one per row)."""
    cdf = jnp.cumsum(weights_xK, axis=-1)
    below = cdf <= (u_x * cdf[..., -1])[..., None]
    return jnp.minimum(below.sum(-1), weights_xK.shape[-1] - 1).astype(jnp.int32)


def rollout(key: jax.Array, transition_BxKxK: jax.Array, length: int) -> jax.Array:
    """[B, L] sequences: x_0 ~ stationary of each chain, x_{t+1} ~ T[x_t]."""
    start_key, step_key = jax.random.split(key)
    batch = transition_BxKxK.shape[0]
    x0 = inverse_cdf(stationary(transition_BxKxK), jax.random.uniform(start_key, (batch,)))
    u_LxB = jax.random.uniform(step_key, (length - 1, batch))
    rows = jnp.arange(batch)

    def advance(x_B, u_B):
        nxt = inverse_cdf(transition_BxKxK[rows, x_B], u_B)
        return nxt, nxt

    _, rest_LxB = jax.lax.scan(advance, x0, u_LxB)
    return jnp.concatenate([x0[:, None], rest_LxB.T], axis=1)


def _batch(key: jax.Array, transition_BxKxK: jax.Array, chain_B: jax.Array, length: int) -> Batch:
    tokens = rollout(key, transition_BxKxK, length)
    probs = jnp.take_along_axis(transition_BxKxK, tokens[:, :, None], axis=1)
    return Batch(tokens, probs, chain_B)


class Constants(NamedTuple):
    """A run's fixed task constants: the chain bank and its unnormalised mixture weights."""
    bank_NxKxK: jax.Array
    weights_N: jax.Array


def constants(run_key: jax.Array, spec: Spec, hparams: dict) -> Constants:
    """The run's training chains (a pure function of its key; computed once, not per step)."""
    bank = sample_chains(jax.random.fold_in(run_key, CHAINS), spec.task.num_chains,
                         spec.task.num_states, hparams["task"]["alpha"])
    return Constants(bank, mixture_weights(jax.random.fold_in(run_key, WEIGHTS), spec, hparams))


def sample(key: jax.Array, consts: Constants, spec: Spec, hparams: dict, batch_size: int,
           split: str = "id") -> Batch:
    """`batch_size` sequences of length `context_length` drawn with `key`.

    ``split="id"`` samples from the training mixture in `consts`, ``split="ood"`` from fresh
    Dirichlet chains, one per sequence.
    """
    length = spec.task.context_length
    pick_key, roll_key = jax.random.split(key)
    if split == "id":
        u_B = jax.random.uniform(pick_key, (batch_size,))
        weights_BxN = jnp.broadcast_to(consts.weights_N, (batch_size,) + consts.weights_N.shape)
        chain_B = inverse_cdf(weights_BxN, u_B)
        return _batch(roll_key, consts.bank_NxKxK[chain_B], chain_B, length)
    if split == "ood":
        fresh = sample_chains(pick_key, batch_size, spec.task.num_states, hparams["task"]["alpha"])
        return _batch(roll_key, fresh, jnp.full((batch_size,), -1, jnp.int32), length)
    raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")


train_batch, eval_batch = streams.batches(sample, TRAIN_STREAM, {"id": EVAL_ID, "ood": EVAL_OOD})


def vocab_size(spec: Spec) -> int:
    return spec.task.num_states


def seq_len(spec: Spec) -> int:
    """Rows of the model's position table (the model reads the first context_length - 1)."""
    return spec.task.context_length
