"""Concept read-outs: images [B, H, W, 3] in [0, 1] back to concept values, two ways.

1. `pixels`: exact for the renderer's own images (no training). An image is
   bg + m (colour - bg) with m the blurred disk, so: the background is the mean colour of the
   brightest fifth of the pixels (the disk covers at most half the image); the foreground
   contrast v is the mean of (pixel - bg) over the pixels within 5% of the largest distance from
   bg (the disk's core; a small blurred disk's peak only reaches p < 1 of its colour); each
   pixel's mask is m = clip((pixel - bg) . v / |v|^2, 0, 1) and the disk's area A = sum m. The
   peak of a disk of radius R blurred by sigma pixels is p = 1 - exp(-R^2 / (2 sigma^2)) and
   A, v are off by 1/p, p, so p is the fixed point of p = 1 - exp(-p A / (2 pi sigma^2)) (8
   iterations); colour = bg + v / p, radius = sqrt(p A / pi) grid units (2 / (H - 1) per
   pixel). A disk cut by the image border reads smaller than it is (tests state the tolerances);
   the analysis compares read-outs with the read-outs of the training data itself, so that bias
   cancels.
2. `Classifier`: the paper's way — a small MLP trained on rendered images with known labels
   (colour blue?, size small?), all four classes, fresh renders every step (`train_classifier`,
   pure: the analysis trains one per run, vmapped, at that run's concept signals).

Shapes in names: B batch, H = W image side.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxsim.testbeds.concept_images import render

BACKGROUND_SHARE = 0.2      # brightest share of pixels taken as background
CORE = 0.95                 # pixels within this fraction of the largest contrast: the core
CLASSIFIER_STEPS, CLASSIFIER_BATCH, CLASSIFIER_LR = 400, 128, 3e-3


def pixels(images_BxHxWxC: jax.Array, blur_sigma: float) -> tuple[jax.Array, jax.Array]:
    """(rgb [B, 3], radius [B] in grid units) read off the pixels."""
    b, h, w, _ = images_BxHxWxC.shape
    flat_BxNx3 = images_BxHxWxC.reshape(b, h * w, 3).astype(jnp.float32)
    bright_BxN = flat_BxNx3.mean(-1)
    k = max(1, int(h * w * BACKGROUND_SHARE))
    _, top_Bxk = jax.lax.top_k(bright_BxN, k)
    bg_Bx3 = jnp.take_along_axis(flat_BxNx3, top_Bxk[:, :, None], axis=1).mean(1)
    diff_BxNx3 = flat_BxNx3 - bg_Bx3[:, None, :]
    dist_BxN = jnp.sqrt(jnp.sum(diff_BxNx3 ** 2, -1))
    core_BxN = dist_BxN >= CORE * dist_BxN.max(1, keepdims=True)
    v_Bx3 = (jnp.sum(diff_BxNx3 * core_BxN[..., None], 1)
             / jnp.maximum(core_BxN.sum(1), 1)[:, None])
    norm2_B = jnp.maximum(jnp.sum(v_Bx3 ** 2, -1), 1e-8)
    m_BxN = jnp.clip(jnp.einsum("bnc,bc->bn", diff_BxNx3, v_Bx3) / norm2_B[:, None], 0, 1)
    area_B = m_BxN.sum(1)
    peak_B = jnp.ones_like(area_B)
    if blur_sigma > 0:
        for _ in range(8):
            peak_B = 1 - jnp.exp(-peak_B * area_B / (2 * jnp.pi * blur_sigma ** 2))
        peak_B = jnp.maximum(peak_B, 1e-3)
    rgb_Bx3 = bg_Bx3 + v_Bx3 / peak_B[:, None]
    radius_B = jnp.sqrt(peak_B * area_B / jnp.pi) * 2 / (h - 1)
    return rgb_Bx3, radius_B


class Classifier(nn.Module):
    """Image -> 2 logits: (blue rather than red, small rather than big)."""
    width: int = 128

    @nn.compact
    def __call__(self, images_BxHxWxC: jax.Array) -> jax.Array:
        x = (images_BxHxWxC.reshape(images_BxHxWxC.shape[0], -1) - 0.5) * 2
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width // 2)(x))
        return nn.Dense(2)(x)


def labelled(key: jax.Array, sep_col, sep_size, size: int, blur_sigma: float,
             noise_level: float, batch: int) -> tuple[jax.Array, jax.Array]:
    """(images, labels [B, 2] float: blue?, small?) rendered from all four classes."""
    k_class, k_draw = jax.random.split(key)
    class_B = jax.random.randint(k_class, (batch,), 0, render.NUM_CLASSES)
    images, _ = render.draw(k_draw, class_B, sep_col, sep_size, size, blur_sigma, noise_level)
    colour_B, size_B = render.colour_size(class_B)
    return images, jnp.stack([colour_B, size_B], 1).astype(jnp.float32)


def train_classifier(key: jax.Array, sep_col, sep_size, size: int, blur_sigma: float,
                     noise_level: float, steps: int = CLASSIFIER_STEPS) -> dict:
    """The classifier's params after `steps` Adam steps on fresh labelled renders (pure)."""
    model = Classifier()
    params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, size, size, 3)))["params"]
    opt = optax.adam(CLASSIFIER_LR)

    def step(carry, i):
        params, opt_state = carry
        images, labels = labelled(jax.random.fold_in(key, i + 1), sep_col, sep_size, size,
                                  blur_sigma, noise_level, CLASSIFIER_BATCH)

        def loss(p):
            logits = model.apply({"params": p}, images)
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params


def classify(params: dict, images_BxHxWxC: jax.Array) -> jax.Array:
    """[B, 2] probabilities (blue, small)."""
    return jax.nn.sigmoid(Classifier().apply({"params": params}, images_BxHxWxC))
