"""A BERT-style encoder with a scalar read-out per position (matrix completion as MLM).

As in the paper's code (a HuggingFace BertModel): learned absolute positions, no token types,
no dropout, GELU MLP, an embedding LayerNorm over token + position, then post-LayerNorm blocks
(eps 1e-12); pre-LN blocks (with a final LayerNorm) as an option, the embedding LayerNorm kept.
The MASK token's embedding is fixed at zero and gets no gradient (BERT's padding_idx 0). With
``input="continuous"`` an observed entry is embedded as value x a learned vector (init std
d^-1/2) and a masked entry as a learned mask vector. Read-out: Dense(1) at every position.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsim.config import ModelConfig
from jaxsim.models.transformer import INIT_STD, SelfAttention, mlp

BERT_LN_EPS = 1e-12


class EncoderBlock(nn.Module):
    num_heads: int
    d_mlp: int
    norm: str
    residual_std: float

    @nn.compact
    def __call__(self, x_BxTxC: jax.Array) -> tuple[jax.Array, jax.Array]:
        attention = SelfAttention(self.num_heads, False, self.residual_std, causal=False,
                                  name="attn")
        ln1, ln2 = nn.LayerNorm(BERT_LN_EPS, name="ln1"), nn.LayerNorm(BERT_LN_EPS, name="ln2")
        if self.norm == "post":
            out, attn = attention(x_BxTxC)
            x_BxTxC = ln1(x_BxTxC + out)
            return ln2(x_BxTxC + mlp(x_BxTxC, self.d_mlp, self.residual_std)), attn
        out, attn = attention(ln1(x_BxTxC))
        x_BxTxC = x_BxTxC + out
        return x_BxTxC + mlp(ln2(x_BxTxC), self.d_mlp, self.residual_std), attn


class Encoder(nn.Module):
    """(tokens [B, T] int, values [B, T] float) -> predictions [B, T] (and activations)."""
    vocab_size: int
    max_length: int
    num_layers: int
    d_model: int
    num_heads: int
    d_mlp: int
    norm: str = "post"
    input: str = "tokens"

    @nn.compact
    def __call__(self, tokens_BxT: jax.Array, values_BxT: jax.Array,
                 return_activations: bool = False):
        masked_BxT = tokens_BxT == 0
        if self.input == "tokens":
            table = self.param("embed", nn.initializers.normal(INIT_STD),
                               (self.vocab_size, self.d_model))
            table = table.at[0].set(0.0)     # MASK: fixed zero, no gradient
            x = table[tokens_BxT]
        else:
            value_C = self.param("value_embed", nn.initializers.normal(self.d_model ** -0.5),
                                 (self.d_model,))
            mask_C = self.param("mask_embed", nn.initializers.normal(INIT_STD), (self.d_model,))
            observed = jnp.where(masked_BxT, 0.0, values_BxT)[..., None] * value_C[None, None]
            x = jnp.where(masked_BxT[..., None], mask_C[None, None], observed)
        pos_TxC = self.param("pos_embed", nn.initializers.normal(INIT_STD),
                             (self.max_length, self.d_model))
        x = nn.LayerNorm(BERT_LN_EPS, name="ln_embed")(x + pos_TxC[None, : tokens_BxT.shape[1]])
        residual_std = INIT_STD / math.sqrt(2 * self.num_layers)
        activations = {"embed": x}
        for i in range(self.num_layers):
            x, attn = EncoderBlock(self.num_heads, self.d_mlp, self.norm, residual_std,
                                   name=f"block{i}")(x)
            activations[f"block{i}"] = x
            activations[f"attn{i}"] = attn
        if self.norm == "pre":
            x = nn.LayerNorm(BERT_LN_EPS, name="ln_f")(x)
        preds = nn.Dense(1, kernel_init=nn.initializers.normal(INIT_STD), name="readout")(x)[..., 0]
        return (preds, activations) if return_activations else preds


def build(model: ModelConfig, vocab_size: int, max_length: int) -> Encoder:
    return Encoder(vocab_size=vocab_size, max_length=max_length, num_layers=model.num_layers,
                   d_model=model.d_model, num_heads=model.num_heads, d_mlp=model.d_mlp,
                   norm=model.norm, input=model.input)
