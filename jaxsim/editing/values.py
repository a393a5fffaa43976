"""The target value v* of an edit, found by gradient steps (rome/compute_v.py, memit/compute_z.py),
and the fine-tuning baseline; both optax Adam under `lax.scan`, pure and vmappable over edits.

A vector δ is added at block l's output at the fact token (`Request.lookup_P`) of every
rewriting prompt and of the KL prompt (for ROME this is the MLP output there; for MEMIT the
residual stream) and optimised so that the model names the new object at each prompt's answer
position:

  loss(δ) = NLL(new object) + kl_factor · KL(p_δ ‖ p_0) + weight_decay · ‖δ‖ / ‖v_0‖²

(p the next-token distribution of the KL prompt at its lookup position, the reference's
"{} is a"; v_0 the initial value at the edited prompt's lookup position), with Adam at `lr`, δ clamped to norm clamp · ‖v_0‖ after each step, and no further
step once the loss is below 0.05 or at the last of `steps` iterations, as the reference does
(its early `break`s are a `done` flag here). v* = v_0 + δ.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsim.editing import sites
from jaxsim.editing.sites import Request

STOP_LOSS = 5e-2


class ValueHparams(NamedTuple):
    """The reference's `v_lr`, `kl_factor`, `v_weight_decay`, `clamp_norm_factor` (traced)."""
    lr: jax.Array
    kl_factor: jax.Array
    weight_decay: jax.Array
    clamp: jax.Array


def _norm(x: jax.Array) -> jax.Array:
    """‖x‖ with torch's gradient at 0 (zero, where jnp.linalg.norm's is NaN)."""
    sq = jnp.sum(x * x)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def optimise_value(model, params: dict, request: Request, layer: int, steps: int,
                   hp: ValueHparams, site: str = "mlp") -> tuple[jax.Array, jax.Array]:
    """(v* [C], the new object's mean probability over the rewriting prompts with δ added).
    `site`: "mlp" (ROME: v_0 is the MLP output) or "resid" (MEMIT: the block's output)."""
    num = request.tokens_PxT.shape[0]
    tokens = jnp.concatenate([request.tokens_PxT, request.kl_T[None]])
    lookup = jnp.concatenate([request.lookup_P, request.kl_lookup[None]])
    reads = sites.read(model, params, tokens, layer)
    source = reads.mlp_out_BxTxC if site == "mlp" else reads.resid_BxTxC
    init_C = sites.at(source[:1], request.lookup_P[:1])[0]
    kl_init_V = jax.nn.log_softmax(sites.at(reads.logits_BxTxV[num:], lookup[num:])[0])
    max_norm = hp.clamp * jnp.linalg.norm(init_C)

    def loss_fn(delta_C):
        logits = model.apply({"params": params}, tokens,
                             edit=sites.add_at(layer, lookup, delta_C))
        logp_P = sites.target_log_probs(logits[:num], request.answer_P, request.target)
        kl_V = jax.nn.log_softmax(sites.at(logits[num:], lookup[num:])[0])
        kl = jnp.sum(jnp.exp(kl_V) * (kl_V - kl_init_V))
        decay = hp.weight_decay * _norm(delta_C) / jnp.sum(init_C ** 2)
        return -logp_P.mean() + hp.kl_factor * kl + decay, jnp.exp(logp_P).mean()

    opt = optax.adam(hp.lr)

    def step(carry, it):
        delta, state, done = carry
        (loss, _), grad = jax.value_and_grad(loss_fn, has_aux=True)(delta)
        done = done | (loss < STOP_LOSS) | (it == steps - 1)
        update, new_state = opt.update(grad, state, delta)
        moved = delta + update
        norm = jnp.linalg.norm(moved)
        moved = jnp.where(norm > max_norm, moved * max_norm / jnp.maximum(norm, 1e-30), moved)
        keep = lambda new, old: jnp.where(done, old, new)
        return (keep(moved, delta), jax.tree.map(keep, new_state, state), done), None

    delta0 = jnp.zeros_like(init_C)
    (delta, _, _), _ = jax.lax.scan(step, (delta0, opt.init(delta0), jnp.array(False)),
                                    jnp.arange(steps))
    return init_C + delta, loss_fn(delta)[1]


def finetune(model, params: dict, request: Request, layer: int, steps: int, lr: jax.Array,
             scope: str = "mlp") -> dict:
    """The fine-tuning baseline: `steps` Adam steps at `lr` on the new object's NLL over the
    request's prompts, training block `layer`'s MLP output projection (scope "mlp") or every
    weight ("all"); returns the fine-tuned params."""
    def trainable(p):
        return p if scope == "all" else p[f"block{layer}"]["proj"]

    def merge(p, part):
        if scope == "all":
            return part
        block = {**p[f"block{layer}"], "proj": part}
        return {**p, f"block{layer}": block}

    def loss_fn(part):
        logits = model.apply({"params": merge(params, part)}, request.tokens_PxT)
        return -sites.target_log_probs(logits, request.answer_P, request.target).mean()

    opt = optax.adam(lr)

    def step(carry, _):
        part, state = carry
        grad = jax.grad(loss_fn)(part)
        update, state = opt.update(grad, state, part)
        return (optax.apply_updates(part, update), state), None

    part0 = trainable(params)
    (part, _), _ = jax.lax.scan(step, (part0, opt.init(part0)), None, length=steps)
    return merge(params, part)
