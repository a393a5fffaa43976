"""Steering methods: from a behaviour's fit prompts to unit interventions.

Every method reads the model's activations at the continuation positions of the fit prompts
(`read_activations`: the residual stream after each block, and each block's attention heads'
outputs before the output projection), for the matching and the non-matching continuation of
the same prompt, and returns a unit `Intervention` per layer; a multiplier m adds m times it.

- CAA (Rimsky et al. 2024): the mean residual difference, matching minus non-matching.
- ITI (Li et al. 2023): per head, a logistic probe of matching vs non-matching (trained on the
  even fit prompts, its accuracy measured on the odd ones); the layer's `k` best heads are
  shifted along their mass-mean direction theta (unit), by sigma = the standard deviation of the
  heads' activations along theta (ITI's alpha * sigma * theta, alpha = the multiplier).
- random: directions drawn uniformly on the sphere, scaled to CAA's norm at the same layer.
- SAE (`sae_direction`): the latent whose mean code differs most between matching and
  non-matching, its decoder direction times that difference.

Shapes: N prompts, K continuation tokens, S blocks, C d_model, H heads, D head width, F latents.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsim.testbed import Contrast

PROBE_STEPS, PROBE_LR, PROBE_L2 = 200, 0.5, 1e-3


class Activations(NamedTuple):
    """The fit prompts' activations at their K continuation positions."""
    resid_match_NxKxSxC: jax.Array
    resid_nonmatch_NxKxSxC: jax.Array
    heads_match_NxKxSxHxD: jax.Array
    heads_nonmatch_NxKxSxHxD: jax.Array
    valid_N: jax.Array


class Intervention(NamedTuple):
    """A unit intervention at block `layer`: `resid_C` is added to the block's output residual
    stream and `heads_HxD` to its heads' outputs (at every position), both times the
    multiplier."""
    layer: jax.Array
    resid_C: jax.Array
    heads_HxD: jax.Array


def continuation_positions(target_BxT: jax.Array, k: int) -> jax.Array:
    """[B, K] the positions of each row's K continuation tokens, in order."""
    return jnp.argsort(~target_BxT, axis=1, stable=True)[:, :k].astype(jnp.int32)


def run_with_heads(model, params: dict, tokens_BxT: jax.Array, edit=None) -> tuple:
    """(logits, {site: activation}) with every block's residual output and heads' outputs."""
    edit = edit or (lambda site, x: x)
    heads = {}

    def capture(site, x):
        x = edit(site, x)
        if site.startswith("heads"):
            heads[site] = x
        return x

    logits, acts = model.apply({"params": params}, tokens_BxT, return_activations=True,
                               edit=capture)
    return logits, {**acts, **heads}


def read_activations(model, params: dict, contrast: Contrast, k: int, num_layers: int
                     ) -> Activations:
    at_BxK = continuation_positions(contrast.target_BxT, k)

    def gather(tokens_BxT):
        _, acts = run_with_heads(model, params, tokens_BxT)
        take = lambda x: jax.vmap(lambda row, i: row[i])(x, at_BxK)  # noqa: E731
        resid = jnp.stack([take(acts[f"block{i}"]) for i in range(num_layers)], 2)
        heads = jnp.stack([take(acts[f"heads{i}"]) for i in range(num_layers)], 2)
        return resid, heads

    (rm, hm), (rn, hn) = gather(contrast.match_BxT), gather(contrast.nonmatch_BxT)
    return Activations(rm, rn, hm, hn, contrast.valid_B)


def _weights(valid_N: jax.Array) -> jax.Array:
    w = valid_N.astype(jnp.float32)
    return w / jnp.maximum(w.sum(), 1.0)


def caa(acts: Activations) -> jax.Array:
    """[S, C] the mean over valid prompts and continuation tokens of matching minus
    non-matching residual activations."""
    diff = (acts.resid_match_NxKxSxC - acts.resid_nonmatch_NxKxSxC).mean(1)
    return jnp.einsum("n,nsc->sc", _weights(acts.valid_N), diff)


def random_directions(key: jax.Array, norms_S: jax.Array, num: int, width: int) -> jax.Array:
    """[R, S, C] directions uniform on the sphere with norm `norms_S` per layer."""
    g = jax.random.normal(key, (num, norms_S.shape[0], width))
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True) * norms_S[None, :, None]


def probe_accuracy(pos_NxD: jax.Array, neg_NxD: jax.Array, valid_N: jax.Array) -> jax.Array:
    """Held-out accuracy of a logistic probe telling `pos` from `neg`: trained by full-batch
    gradient descent on the even prompts (standardised features, L2), scored on the odd."""
    n = pos_NxD.shape[0]
    train = (jnp.arange(n) % 2 == 0) & valid_N
    held = (jnp.arange(n) % 2 == 1) & valid_N
    x = jnp.concatenate([pos_NxD, neg_NxD])
    y = jnp.concatenate([jnp.ones(n), jnp.zeros(n)])
    w_tr = jnp.concatenate([train, train]).astype(jnp.float32)
    w_te = jnp.concatenate([held, held]).astype(jnp.float32)
    mu = jnp.einsum("n,nd->d", w_tr, x) / jnp.maximum(w_tr.sum(), 1.0)
    sd = jnp.sqrt(jnp.einsum("n,nd->d", w_tr, (x - mu[None]) ** 2) / jnp.maximum(w_tr.sum(), 1.0))
    z = (x - mu[None]) / (sd[None] + 1e-6)

    def loss(wb):
        logit = z @ wb[:-1] + wb[-1]
        nll = jnp.logaddexp(0.0, logit) - y * logit
        return jnp.sum(w_tr * nll) / jnp.maximum(w_tr.sum(), 1.0) + PROBE_L2 * jnp.sum(wb[:-1] ** 2)

    def step(wb, _):
        return wb - PROBE_LR * jax.grad(loss)(wb), None

    wb, _ = jax.lax.scan(step, jnp.zeros(x.shape[1] + 1), None, length=PROBE_STEPS)
    right = ((z @ wb[:-1] + wb[-1]) > 0) == (y > 0.5)
    return jnp.sum(w_te * right) / jnp.maximum(w_te.sum(), 1.0)


def iti(acts: Activations, num_heads: int) -> tuple[jax.Array, jax.Array]:
    """([S, H, D] unit head shifts, [S, H] probe accuracies): the `num_heads` most accurate
    heads of each layer shifted by sigma * theta (mass-mean direction), the others not."""
    pos = acts.heads_match_NxKxSxHxD.mean(1)               # [N, S, H, D]
    neg = acts.heads_nonmatch_NxKxSxHxD.mean(1)
    per_head = lambda f: jax.vmap(jax.vmap(f, in_axes=(1, 1)), in_axes=(1, 1))  # noqa: E731
    acc_SxH = per_head(lambda p, q: probe_accuracy(p, q, acts.valid_N))(pos, neg)
    w = _weights(acts.valid_N)
    mean_diff = jnp.einsum("n,nshd->shd", w, pos - neg)
    theta = mean_diff / jnp.maximum(jnp.linalg.norm(mean_diff, axis=-1, keepdims=True), 1e-12)
    proj_pos = jnp.einsum("nshd,shd->nsh", pos, theta)
    proj_neg = jnp.einsum("nshd,shd->nsh", neg, theta)
    both = jnp.concatenate([proj_pos, proj_neg])
    w2 = jnp.concatenate([w, w]) / 2
    mean = jnp.einsum("n,nsh->sh", w2, both)
    sigma = jnp.sqrt(jnp.einsum("n,nsh->sh", w2, (both - mean[None]) ** 2))
    rank = jnp.argsort(jnp.argsort(-acc_SxH, axis=1, stable=True), axis=1)
    chosen = (rank < num_heads).astype(theta.dtype)
    return chosen[..., None] * sigma[..., None] * theta, acc_SxH


def sae_direction(codes_match_MxF: jax.Array, codes_nonmatch_MxF: jax.Array,
                  decoder_FxC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(latent j, [C] unit intervention): the latent with the largest |mean code difference|
    (matching minus non-matching) and its data-space decoder direction times that difference."""
    diff_F = codes_match_MxF.mean(0) - codes_nonmatch_MxF.mean(0)
    j = jnp.argmax(jnp.abs(diff_F))
    return j, diff_F[j] * decoder_FxC[j]


def residual_norms(model, params: dict, contrast: Contrast, num_layers: int) -> jax.Array:
    """[S] the mean norm of the residual stream after each block over the prompts' positions
    (matching rows, up to the continuation's end): the scale an intervention is added to."""
    _, acts = model.apply({"params": params}, contrast.match_BxT, return_activations=True)
    upto_BxT = jnp.cumsum(contrast.target_BxT[:, ::-1], 1)[:, ::-1] > 0
    w = (upto_BxT & contrast.valid_B[:, None]).astype(jnp.float32)
    return jnp.stack([jnp.sum(jnp.linalg.norm(acts[f"block{i}"], axis=-1) * w)
                      / jnp.maximum(w.sum(), 1.0) for i in range(num_layers)])


def effect_norm(params: dict, iv: Intervention, num_layers: int) -> jax.Array:
    """The norm of what a unit intervention adds to the residual stream at its layer (heads'
    shifts through the layer's attention output projection)."""
    kernels_SxHDxC = jnp.stack([params[f"block{i}"]["attn"]["out"]["kernel"]
                                for i in range(num_layers)])
    via_heads = iv.heads_HxD.reshape(-1) @ kernels_SxHDxC[iv.layer]
    return jnp.linalg.norm(iv.resid_C + via_heads)
