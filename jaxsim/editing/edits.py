"""The edits as pure functions (params, request(s)) -> params, each vmappable over edits and runs.

rome       one fact, one layer: v* at the MLP output (values.optimise_value, site "mlp"), the key
           averaged over the request's prompts, the rank-one update (methods.rome_delta)
memit      a batch of facts over several layers (memit/memit_main.py): v* = z at the last
           layer's output residual stream; then layer by layer, with the earlier layers already
           updated, the keys averaged over contexts as compute_ks does (the edited prompt and
           the mean of the others, averaged), the residual z − z_now split over the remaining
           layers, and the least-squares update (methods.memit_delta)
alphaedit  memit's procedure with AlphaEdit's null-space-projected update
finetune   values.finetune
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsim.editing import methods, sites, values
from jaxsim.editing.sites import Request


class Stats(NamedTuple):
    """Per edited layer (in the order of `layers`): the key second moment C and AlphaEdit's
    null-space projector P, both [S, K, K]."""
    cov_SxKxK: jax.Array
    projector_SxKxK: jax.Array


def key_stats(model, params: dict, tokens_BxT: jax.Array, layers: tuple, threshold) -> Stats:
    """C from the keys at every position of `tokens_BxT` (the model's own training data), and P."""
    covs = []
    for layer in layers:
        keys = sites.read(model, params, tokens_BxT, layer).keys_BxTxK
        covs.append(methods.second_moment(keys.reshape(-1, keys.shape[-1])))
    cov = jnp.stack(covs)
    return Stats(cov, jax.vmap(methods.null_space_projector, (0, None))(cov, threshold))


def _subject_keys(model, params, request: Request, layer: int):
    reads = sites.read(model, params, request.tokens_PxT, layer)
    return reads, sites.at(reads.keys_BxTxK, request.lookup_P)


def rome(model, params: dict, request: Request, cov_KxK: jax.Array, layer: int, steps: int,
         hp: values.ValueHparams) -> tuple[dict, jax.Array]:
    """(edited params, the new object's probability while optimising v*). The key is read at
    the fact token (`Request.lookup_P`): ROME's `fact_token` subject_last or last."""
    target_C, prob = values.optimise_value(model, params, request, layer, steps, hp, "mlp")
    reads, keys_PxK = _subject_keys(model, params, request, layer)
    key_K = keys_PxK[0]
    out_C = sites.at(reads.mlp_out_BxTxC, request.lookup_P)[0]
    delta = methods.rome_delta(keys_PxK.mean(0), key_K, target_C - out_C, cov_KxK)
    return sites.with_kernel_delta(params, layer, delta), prob


def _context_key(keys_PxK: jax.Array) -> jax.Array:
    """compute_ks: the mean over context types (the plain prompt; the prompts with contexts)."""
    return 0.5 * (keys_PxK[0] + keys_PxK[1:].mean(0)) if keys_PxK.shape[0] > 1 else keys_PxK[0]


def memit(model, params: dict, requests: Request, stats: Stats, layers: tuple, steps: int,
          hp: values.ValueHparams, cov_weight, l2=None) -> tuple[dict, jax.Array]:
    """(params with the E stacked requests written in, the new objects' probabilities [E]
    while optimising z). `l2` given: AlphaEdit's projected update instead of MEMIT's."""
    z_layer = layers[-1]
    zs_ExC, probs_E = jax.vmap(
        lambda r: values.optimise_value(model, params, r, z_layer, steps, hp, "resid"))(requests)
    for i, layer in enumerate(layers):
        def current(r, p=params, layer=layer):
            keys = _subject_keys(model, p, r, layer)[1]
            z_now = sites.at(sites.read(model, p, r.tokens_PxT[:1], z_layer).resid_BxTxC,
                             r.lookup_P[:1])[0]
            return _context_key(keys), z_now
        keys_ExK, z_now_ExC = jax.vmap(current)(requests)
        resid_ExC = (zs_ExC - z_now_ExC) / (len(layers) - i)
        if l2 is None:
            delta = methods.memit_delta(keys_ExK, resid_ExC, stats.cov_SxKxK[i], cov_weight)
        else:
            delta = methods.alphaedit_delta(keys_ExK, resid_ExC, stats.projector_SxKxK[i], l2)
        params = sites.with_kernel_delta(params, layer, delta)
    return params, probs_E


def finetune(model, params: dict, request: Request, layer: int, steps: int, lr,
             scope: str = "mlp") -> tuple[dict, jax.Array]:
    tuned = values.finetune(model, params, request, layer, steps, lr, scope)
    logits = model.apply({"params": tuned}, request.tokens_PxT)
    return tuned, jnp.exp(sites.target_log_probs(logits, request.answer_P, request.target)).mean()
