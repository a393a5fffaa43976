"""A pre-LayerNorm GPT decoder (nanoGPT layout) in flax.linen.

Tied input/output embeddings, GELU MLP, causal self-attention with learned absolute positions
or rotary embeddings (interleaved pairs, base 10000). Init N(0, 0.02); residual projections
N(0, 0.02 / sqrt(2 * num_layers)) as in GPT-2.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsim.config import ModelConfig

INIT_STD = 0.02


def rope(x_BxTxHxD: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotate interleaved pairs (x[2i], x[2i+1]) by angle t * base^(-2i/D)."""
    _, length, _, dim = x_BxTxHxD.shape
    inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    angle_TxD2 = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    cos, sin = jnp.cos(angle_TxD2)[None, :, None, :], jnp.sin(angle_TxD2)[None, :, None, :]
    even, odd = x_BxTxHxD[..., 0::2], x_BxTxHxD[..., 1::2]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rotated.reshape(x_BxTxHxD.shape).astype(x_BxTxHxD.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention; causal for the decoder, bidirectional for the encoder.
    Scores are computed in `dtype`, the softmax in float32."""
    num_heads: int
    use_rope: bool
    residual_std: float
    causal: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxTxC: jax.Array, head_edit=None) -> tuple[jax.Array, jax.Array]:
        """`head_edit(out_BxTxHxD) -> out`, if given, replaces the heads' outputs before the
        output projection (inference-time intervention shifts them)."""
        batch, length, width = x_BxTxC.shape
        head = width // self.num_heads
        qkv = nn.Dense(3 * width, kernel_init=nn.initializers.normal(INIT_STD), dtype=self.dtype,
                       name="qkv")(x_BxTxC)
        q, k, v = jnp.split(qkv.reshape(batch, length, 3 * self.num_heads, head), 3, axis=2)
        if self.use_rope:
            q, k = rope(q), rope(k)
        scores_BxHxTxT = (jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head)).astype(jnp.float32)
        if self.causal:
            causal_TxT = jnp.tril(jnp.ones((length, length), bool))
            scores_BxHxTxT = jnp.where(causal_TxT[None, None], scores_BxHxTxT,
                                       jnp.finfo(scores_BxHxTxT.dtype).min)
        attn_BxHxTxT = jax.nn.softmax(scores_BxHxTxT, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", attn_BxHxTxT.astype(v.dtype), v)
        if head_edit is not None:
            out = head_edit(out)
        out = nn.Dense(width, kernel_init=nn.initializers.normal(self.residual_std),
                       dtype=self.dtype, name="out")(out.reshape(batch, length, width))
        return out, attn_BxHxTxT


class Block(nn.Module):
    num_heads: int
    d_mlp: int
    use_rope: bool
    residual_std: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxTxC: jax.Array, head_edit=None) -> tuple[jax.Array, jax.Array]:
        attn_out, attn = SelfAttention(self.num_heads, self.use_rope, self.residual_std,
                                       dtype=self.dtype, name="attn")(
            nn.LayerNorm(dtype=self.dtype, name="ln1")(x_BxTxC), head_edit)
        x_BxTxC = x_BxTxC + attn_out
        h = nn.LayerNorm(dtype=self.dtype, name="ln2")(x_BxTxC)
        return x_BxTxC + mlp(h, self.d_mlp, self.residual_std, self.dtype), attn


def mlp(x_BxTxC: jax.Array, d_mlp: int, residual_std: float, dtype=jnp.float32) -> jax.Array:
    """GELU MLP; call inside a compact method (its Dense layers, "fc" and "proj", join the caller)."""
    h = nn.Dense(d_mlp, kernel_init=nn.initializers.normal(INIT_STD), dtype=dtype,
                 name="fc")(x_BxTxC)
    return nn.Dense(x_BxTxC.shape[-1], kernel_init=nn.initializers.normal(residual_std),
                    dtype=dtype, name="proj")(jax.nn.gelu(h, approximate=True))


class GPT(nn.Module):
    """tokens [B, T] int -> logits [B, T, V] (and, on request, per-layer activations)."""
    vocab_size: int
    max_length: int
    num_layers: int
    d_model: int
    num_heads: int
    d_mlp: int
    positional: str = "learned"
    dtype: jnp.dtype = jnp.float32   # activations and matmuls; parameters stay float32

    @nn.compact
    def __call__(self, tokens_BxT: jax.Array, return_activations: bool = False, edit=None):
        """`edit(site, x) -> x`, if given, replaces the residual stream at each site ("embed",
        "block0", ...) before the model reads on (e.g. an SAE reconstruction spliced in), and
        the attention heads' outputs [B, T, H, D/H] at "heads0", "heads1", ... (before each
        block's output projection)."""
        edit = edit or (lambda site, x: x)
        embed = nn.Embed(self.vocab_size, self.d_model, dtype=self.dtype,
                         embedding_init=nn.initializers.normal(INIT_STD), name="embed")
        x = embed(tokens_BxT)
        if self.positional == "learned":
            pos_TxC = self.param("pos_embed", nn.initializers.normal(INIT_STD),
                                 (self.max_length, self.d_model))
            x = x + pos_TxC[None, : tokens_BxT.shape[1]].astype(self.dtype)
        residual_std = INIT_STD / math.sqrt(2 * self.num_layers)
        x = edit("embed", x)
        activations = {"embed": x}
        for i in range(self.num_layers):
            x, attn = Block(self.num_heads, self.d_mlp, self.positional == "rope", residual_std,
                            dtype=self.dtype, name=f"block{i}")(
                x, lambda h, i=i: edit(f"heads{i}", h))
            x = edit(f"block{i}", x)
            activations[f"block{i}"] = x
            activations[f"attn{i}"] = attn
        logits = embed.attend(nn.LayerNorm(dtype=self.dtype, name="ln_f")(x)).astype(jnp.float32)
        return (logits, activations) if return_activations else logits


def build(model: ModelConfig, vocab_size: int, max_length: int) -> GPT:
    return GPT(vocab_size=vocab_size, max_length=max_length, num_layers=model.num_layers,
               d_model=model.d_model, num_heads=model.num_heads, d_mlp=model.d_mlp,
               positional=model.positional, dtype=jnp.dtype(model.compute_dtype))
