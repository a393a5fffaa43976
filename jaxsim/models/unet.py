"""A small conditional U-Net in flax.linen: the ε-predictor of a diffusion model (DDPM layout).

    x_BxHxWxC (float32 images in [-1, 1]), t_B (the timestep index 0..T-1, int or float: it is
    embedded as a float, so fractional timesteps work too), cond_BxK (float32 concept vector)
    -> ε prediction of x's shape.

Layout (Ho et al. 2020, shrunk): a 3x3 input conv to channels[0]; per resolution level i,
`blocks_per_level` residual blocks of channels[i] (GroupNorm, SiLU, 3x3 conv, GroupNorm scaled
and shifted per channel by the level's embedding — Nichol & Dhariwal's scale-shift norm —, SiLU,
3x3 conv, 1x1 conv on the skip when the width changes), then a stride-2 3x3 conv down (not after
the last level); a middle of two residual blocks with optional single-head self-attention
between them (`model.attention`); the way up mirrors it with blocks_per_level + 1 blocks per
level, each reading the concatenated skip activation, and nearest-neighbour 2x upsampling + 3x3
conv between levels; GroupNorm, SiLU and a zero-initialised 3x3 conv to C channels. The image
side must be divisible by 2 ** (len(channels) - 1).

Embeddings: the timestep through a sinusoidal embedding (width `time_dim`) and an MLP (Dense,
SiLU, Dense); the condition through its *own* MLP per resolution level (the official code's
`sep_mlp`: `cond{i}`), added to the time embedding; the middle uses the last level's. The
per-level condition embeddings [B, time_dim] are the sites of `edit(site, x) -> x` (sites
"cond0", "cond1", ...): latent interventions (embedding arithmetic) replace them there.
GroupNorm keeps >= 4 channels per group (`groups`). Convolutions are matmuls over patches
(`Conv`: XLA:CPU's convolutions are slow inside loops and under vmap).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsim.config import ModelConfig

ZERO = nn.initializers.zeros


def groups(channels: int) -> int:
    """GroupNorm groups of a `channels`-wide activation: the most (at most 32) that keep at
    least 4 channels per group (one group per channel would be an instance norm)."""
    return max([g for g in range(1, 33) if channels % g == 0 and channels // g >= 4] or [1])


def sinusoidal(t_B: jax.Array, dim: int) -> jax.Array:
    """[B, dim] sin/cos embedding of (float) timesteps, frequencies 10000^(-i/(dim/2))."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    args_BxF = t_B.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args_BxF), jnp.cos(args_BxF)], axis=-1)


class Conv(nn.Module):
    """A k x k convolution (SAME padding as nn.Conv, stride s) as one matmul over im2col patches,
    with nn.Conv's parameters (kernel [k, k, C_in, C_out], lecun-normal; bias [C_out]).

    Why not nn.Conv: XLA:CPU runs lax.conv inside a loop (the lax.scan over training steps)
    ~30x slower than outside it, and vmapped over runs (a grouped convolution) slower still;
    matmuls suffer neither (measured on the 2-core machine: docs/testbeds/concept_images.md).
    """
    features: int
    kernel_size: int = 3
    stride: int = 1
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        _, height, width, c = x_BxHxWxC.shape
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", self.kernel_init, (k, k, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        out_h, out_w = -(-height // s), -(-width // s)
        pad_h, pad_w = max((out_h - 1) * s + k - height, 0), max((out_w - 1) * s + k - width, 0)
        xp = jnp.pad(x_BxHxWxC, ((0, 0), (pad_h // 2, pad_h - pad_h // 2),
                                 (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
        patches = jnp.concatenate([xp[:, i:i + (out_h - 1) * s + 1:s, j:j + (out_w - 1) * s + 1:s]
                                   for i in range(k) for j in range(k)], axis=-1)
        return patches @ kernel.reshape(k * k * c, self.features) + bias[None, None, None, :]


def embed_mlp(x_BxD: jax.Array, width: int, name: str) -> jax.Array:
    """Dense, SiLU, Dense (call inside a compact method: `{name}_fc1`, `{name}_fc2`)."""
    h = nn.silu(nn.Dense(width, name=f"{name}_fc1")(x_BxD))
    return nn.Dense(width, name=f"{name}_fc2")(h)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, GroupNorm modulated by the embedding (scale and shift per channel,
    after the norm, so that no normalisation removes it), SiLU-conv; a residual skip."""
    channels: int

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array, emb_BxD: jax.Array) -> jax.Array:
        h = Conv(self.channels, name="conv1")(
            nn.silu(nn.GroupNorm(groups(x_BxHxWxC.shape[-1]), name="norm1")(x_BxHxWxC)))
        film = nn.Dense(2 * self.channels, name="emb")(nn.silu(emb_BxD))[:, None, None, :]
        scale, shift = jnp.split(film, 2, axis=-1)
        h = nn.GroupNorm(groups(self.channels), name="norm2")(h) * (1 + scale) + shift
        h = Conv(self.channels, kernel_init=ZERO, name="conv2")(nn.silu(h))
        if x_BxHxWxC.shape[-1] != self.channels:
            x_BxHxWxC = Conv(self.channels, 1, name="skip")(x_BxHxWxC)
        return x_BxHxWxC + h


class Attention(nn.Module):
    """Single-head self-attention over the H x W positions (GroupNorm first, residual)."""

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
        b, height, width, c = x_BxHxWxC.shape
        h = nn.GroupNorm(groups(c), name="norm")(x_BxHxWxC).reshape(b, height * width, c)
        q, k, v = jnp.split(nn.Dense(3 * c, name="qkv")(h), 3, axis=-1)
        attn_BxNxN = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(c), axis=-1)
        out = nn.Dense(c, kernel_init=ZERO, name="out")(jnp.einsum("bqk,bkc->bqc", attn_BxNxN, v))
        return x_BxHxWxC + out.reshape(b, height, width, c)


class UNet(nn.Module):
    """(x [B, H, W, C], t [B], cond [B, K]) -> ε [B, H, W, C]."""
    cond_dim: int
    resolution: int
    channels: tuple = (32, 64)
    blocks_per_level: int = 1
    attention: bool = False
    time_dim: int = 64
    out_channels: int = 3

    @nn.compact
    def __call__(self, x_BxHxWxC: jax.Array, t_B: jax.Array, cond_BxK: jax.Array, edit=None):
        edit = edit or (lambda site, x: x)
        levels = len(self.channels)
        side = x_BxHxWxC.shape[1]
        if side % 2 ** (levels - 1) or x_BxHxWxC.shape[2] % 2 ** (levels - 1):
            raise ValueError(f"image side {x_BxHxWxC.shape[1:3]} must be divisible by "
                             f"2**{levels - 1} (model.channels has {levels} levels)")
        t_emb = embed_mlp(sinusoidal(jnp.broadcast_to(t_B, x_BxHxWxC.shape[:1]), self.time_dim),
                          self.time_dim, "time")
        cond_BxK = cond_BxK.astype(jnp.float32)
        emb = [t_emb + edit(f"cond{i}", embed_mlp(cond_BxK, self.time_dim, f"cond{i}"))
               for i in range(levels)]
        h = Conv(self.channels[0], name="conv_in")(x_BxHxWxC)
        skips = [h]
        for i, ch in enumerate(self.channels):
            for j in range(self.blocks_per_level):
                h = ResBlock(ch, name=f"down{i}_{j}")(h, emb[i])
                skips.append(h)
            if i < levels - 1:
                h = Conv(ch, stride=2, name=f"downsample{i}")(h)
                skips.append(h)
        h = ResBlock(self.channels[-1], name="mid1")(h, emb[-1])
        if self.attention:
            h = Attention(name="mid_attn")(h)
        h = ResBlock(self.channels[-1], name="mid2")(h, emb[-1])
        for i in reversed(range(levels)):
            for j in range(self.blocks_per_level + 1):
                h = ResBlock(self.channels[i], name=f"up{i}_{j}")(
                    jnp.concatenate([h, skips.pop()], axis=-1), emb[i])
            if i > 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)    # nearest, 2x
                h = Conv(self.channels[i], name=f"upsample{i}")(h)
        h = nn.silu(nn.GroupNorm(groups(h.shape[-1]), name="norm_out")(h))
        return Conv(self.out_channels, kernel_init=ZERO, name="conv_out")(h)


def build(model: ModelConfig, vocab_size: int, max_length: int) -> UNet:
    """For the unet, `vocab_size` is the conditioning dimension K and `max_length` the image
    side H (= W); images have 3 channels."""
    return UNet(cond_dim=vocab_size, resolution=max_length, channels=tuple(model.channels),
                blocks_per_level=model.blocks_per_level, attention=model.attention,
                time_dim=model.time_dim)
