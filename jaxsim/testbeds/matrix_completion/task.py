"""Low-rank matrix completion as masked-language modelling (Gopalani, Lubana, Hu 2024).

A sample is an n x n matrix X = U V^T of rank r, rounded to 2 decimals (the regression target),
flattened row-major into n^2 positions; each entry is masked independently with probability
`mask_prob`. Inputs are value tokens on a 0.01 grid over [-10, 10] (token = 1 + round(100 x) +
1000, vocab 2002) with MASK = token 0, as in the paper's code. Fresh matrices at every step.

Per-run rank without a shape change: U and V hold `spec.task.rank` (the group maximum) columns,
column j drawn from ``fold_in(key, j)``, and columns >= the run's rank are zeroed — so a run's
matrices do not depend on the other runs it is compiled with.

All functions are pure and jittable; shapes in names: B batch, N = n, R = max rank, P = n^2.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsim.config import Spec
from jaxsim.testbeds import streams as streams

FACTORS_U, FACTORS_V, MASK, TRAIN_STREAM, EVAL_ID = range(5)
SPLITS = ("id",)
MASK_TOKEN = 0
VALUE_STEPS = 100          # tokens per unit: a 0.01 grid
VALUE_MAX = 10.0           # token range [-10, 10]
VOCAB = 1 + 2 * int(VALUE_MAX * VALUE_STEPS) + 1


class Batch(NamedTuple):
    tokens_BxP: jax.Array    # int32 value tokens, MASK_TOKEN where masked
    values_BxP: jax.Array    # float32 rounded entries of X: the target at every position
    masked_BxP: jax.Array    # bool, True where the entry is hidden from the model


def vocab_size(spec: Spec) -> int:
    return VOCAB


def seq_len(spec: Spec) -> int:
    return spec.task.matrix_size ** 2


def constants(run_key: jax.Array, spec: Spec, hparams: dict) -> tuple:
    """No fixed constants: every batch holds fresh matrices."""
    return ()


def tokenize(values: jax.Array, masked: jax.Array) -> jax.Array:
    """Value tokens 1 + round(100 x) + 1000 (values clipped to [-10, 10]); MASK_TOKEN if masked."""
    grid = jnp.round(jnp.clip(values, -VALUE_MAX, VALUE_MAX) * VALUE_STEPS).astype(jnp.int32)
    return jnp.where(masked, MASK_TOKEN, 1 + grid + int(VALUE_MAX * VALUE_STEPS))


def factors(key: jax.Array, spec: Spec, hparams: dict, batch_size: int) -> jax.Array:
    """[B, N, R] factor entries; column j from fold_in(key, j), columns >= the run's rank zero."""
    n, rank, dist = spec.task.matrix_size, spec.task.rank, spec.task.factor_dist
    scale = hparams["task"]["factor_scale"]

    def column(j):
        k = jax.random.fold_in(key, j)
        if dist == "uniform":
            return jax.random.uniform(k, (batch_size, n), minval=-1.0, maxval=1.0)
        if dist == "gaussian":
            return jax.random.normal(k, (batch_size, n))
        return jax.random.laplace(k, (batch_size, n))

    cols_BxNxR = jnp.stack([column(j) for j in range(rank)], axis=-1) * scale
    active_R = (jnp.arange(rank) < hparams["task"]["rank"]).astype(cols_BxNxR.dtype)
    return cols_BxNxR * active_R[None, None, :]


def sample(key: jax.Array, consts: tuple, spec: Spec, hparams: dict, batch_size: int,
           split: str = "id") -> Batch:
    """`batch_size` masked matrices drawn with `key`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    n = spec.task.matrix_size
    u = factors(jax.random.fold_in(key, FACTORS_U), spec, hparams, batch_size)
    v = factors(jax.random.fold_in(key, FACTORS_V), spec, hparams, batch_size)
    x_BxNxN = jnp.einsum("bir,bjr->bij", u, v)
    values = (jnp.round(x_BxNxN * VALUE_STEPS) / VALUE_STEPS).reshape(batch_size, n * n)
    masked = jax.random.uniform(jax.random.fold_in(key, MASK), (batch_size, n * n)) \
        < hparams["task"]["mask_prob"]
    return Batch(tokenize(values, masked), values, masked)


train_batch, eval_batch = streams.batches(sample, TRAIN_STREAM, {"id": EVAL_ID})


def entry_variance(spec_rank: int, dist: str, scale: float) -> float:
    """Var(X_ij) = r Var(u)^2 for independent zero-mean factor entries (before rounding)."""
    var = {"uniform": 1.0 / 3.0, "gaussian": 1.0, "laplace": 2.0}[dist] * scale ** 2
    return spec_rank * var ** 2
