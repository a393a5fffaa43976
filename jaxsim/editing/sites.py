"""Where an edit reads and writes a jaxsim gpt: the MLP's keys and outputs, the residual stream,
and a vector added at a block's output.

The key of block l is the MLP's hidden activation (GELU of `block{l}/fc`), the input of the
output projection `block{l}/proj` that ROME and MEMIT rewrite; it is read with flax's
`capture_intermediates`, so the model itself needs no hook. A vector added to the MLP output at a
position equals one added to the block's output residual stream there (the block returns
x_mid + mlp(x_mid)), which the model's `edit` hook ("block{l}" sites) does.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Request(NamedTuple):
    """One edit: the same fact in P prompts (row 0 the edited prompt itself, the others in other
    contexts: ROME's context templates), each of length T, and the KL prompt (the reference's
    "{} is a": the subject in another fact), whose next-token distribution at its lookup
    position the value optimisation keeps."""
    tokens_PxT: jax.Array        # int32 prompts
    lookup_P: jax.Array          # int32 the fact token (the reference's `fact_token`: the
    #                              subject's last token, or the prompt's last) where keys are
    #                              read and the value is written
    answer_P: jax.Array          # int32 position whose next-token logits name the object
    target: jax.Array            # int32 the new object's token
    kl_T: jax.Array              # int32 the KL prompt
    kl_lookup: jax.Array         # int32 its lookup position


class Reads(NamedTuple):
    """Activations of one forward pass, at every position."""
    keys_BxTxK: jax.Array        # block l's MLP hidden activation (the rewritten layer's input)
    mlp_out_BxTxC: jax.Array     # block l's MLP output
    resid_BxTxC: jax.Array       # block l's output residual stream
    logits_BxTxV: jax.Array


def _site(name: str) -> bool:
    return name in ("fc", "proj")


def read(model, params: dict, tokens_BxT: jax.Array, layer: int) -> Reads:
    """The keys, MLP output and residual stream of block `layer`, and the logits."""
    (logits, acts), state = model.apply(
        {"params": params}, tokens_BxT, return_activations=True,
        capture_intermediates=lambda module, method: _site(module.name), mutable=["intermediates"])
    inter = state["intermediates"][f"block{layer}"]
    keys = jax.nn.gelu(inter["fc"]["__call__"][0], approximate=True)
    return Reads(keys, inter["proj"]["__call__"][0], acts[f"block{layer}"], logits)


def at(x_BxTxC: jax.Array, pos_B: jax.Array) -> jax.Array:
    """x at one position per row [B, C]."""
    return jnp.take_along_axis(x_BxTxC, pos_B[:, None, None], axis=1)[:, 0]


def add_at(layer: int, pos_B: jax.Array, delta_C: jax.Array):
    """An `edit` hook adding delta_C to block `layer`'s output at one position per row."""
    def edit(site, x):
        if site != f"block{layer}":
            return x
        hit_BxT = jnp.arange(x.shape[1])[None, :] == pos_B[:, None]
        return x + hit_BxT[:, :, None].astype(x.dtype) * delta_C[None, None, :]
    return edit


def with_kernel_delta(params: dict, layer: int, delta_KxO: jax.Array) -> dict:
    """params with block `layer`'s MLP output projection kernel moved by delta_KxO."""
    block = dict(params[f"block{layer}"])
    block["proj"] = {**block["proj"], "kernel": block["proj"]["kernel"] + delta_KxO}
    return {**params, f"block{layer}": block}


def target_log_probs(logits_BxTxV: jax.Array, pos_B: jax.Array, target) -> jax.Array:
    """log p(target) [B] from the logits at one position per row."""
    logp = jax.nn.log_softmax(at(logits_BxTxV, pos_B), axis=-1)
    return jnp.take_along_axis(logp, jnp.broadcast_to(target, pos_B.shape)[:, None], axis=1)[:, 0]
