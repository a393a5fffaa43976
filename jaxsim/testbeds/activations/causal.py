"""The causality-promoting SAE term of Menon, Shrivastava, Krueger, Lubana (NAACL 2025).

For each data point i: its nearest other point j in latent space, a code interpolated toward it,
l_i + s (l_j - l_i) with s ~ U(0, 1), decoded and spliced into the frozen source model at the
SAE's site; the term is the MSE between the source's logits on the spliced activations and the
interpolated clean logits, logits_i + s (logits_j - logits_i) (reference code, sae/train.py).
An SAE whose latents are causal variables of the model passes interpolations through to the
model's output linearly. All positions of a sequence are spliced at once, as the reference's
forward hook does. Shapes: N points (sequences x positions), F latents, V vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def nearest_other(z_NxF: jax.Array) -> jax.Array:
    """[N] index j != i of the nearest code ||z_i - z_j|| (matmuls only, no LAPACK)."""
    sq_N = (z_NxF * z_NxF).sum(-1)
    dist_NxN = sq_N[:, None] - 2.0 * z_NxF @ z_NxF.T + sq_N[None, :]
    dist_NxN = jnp.where(jnp.eye(z_NxF.shape[0], dtype=bool), jnp.inf, dist_NxN)
    return jnp.argmin(dist_NxN, axis=-1)


def interpolate(z_NxF: jax.Array, logits_NxV: jax.Array, s_N: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """(interpolated codes [N, F], interpolated clean logits [N, V]: the target, a constant)."""
    j_N = nearest_other(jax.lax.stop_gradient(z_NxF))
    z_int = z_NxF + s_N[:, None] * (z_NxF[j_N] - z_NxF)
    target = logits_NxV + s_N[:, None] * (logits_NxV[j_N] - logits_NxV)
    return z_int, jax.lax.stop_gradient(target)


def consistency_error(logits_NxV: jax.Array, target_NxV: jax.Array) -> jax.Array:
    """mean over points and vocabulary of (intervened - interpolated clean logits)^2."""
    return ((logits_NxV - target_NxV) ** 2).mean()


def interpolation_error(encode, decode, splice, ctx, key: jax.Array) -> jax.Array:
    """The causal term on a `training.activations.Context`: `encode(x_NxD) -> z_NxF`,
    `decode(z_NxF) -> x_NxD` (input units), `splice(inputs_BxT, x_BxTxD) -> logits_BxTxV`."""
    shape = ctx.acts_BxTxD.shape
    vocab = ctx.logits_BxTxV.shape[-1]
    z = encode(ctx.acts_BxTxD.reshape(-1, shape[-1]))
    s_N = jax.random.uniform(key, (z.shape[0],))
    z_int, target = interpolate(z, ctx.logits_BxTxV.reshape(-1, vocab), s_N)
    logits = splice(ctx.inputs_BxT, decode(z_int).reshape(shape))
    return consistency_error(logits.reshape(-1, vocab), target)
