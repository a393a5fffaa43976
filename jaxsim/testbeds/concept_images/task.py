"""The concept_images batches: rendered circles (`render.py`), their concept vectors, and the
DDPM corruption of `diffusion.corrupt`, so a batch is everything the ε-objective needs.

Training batches draw classes uniformly from the three training classes (red-big, red-small,
blue-big) with fresh concept values every step (the population, not the official code's 2048
fixed images per class). Held-out splits are one fixed batch each: `train_classes` (the training
distribution) and `heldout` (blue-small at its class-mean colour and radius, background 0.9,
random position: the official test images).

The condition is the image's own concept values: `task.cond_layout: concepts` gives
K = 4 (r, g, b, radius); `official` the official code's 11 dims [shape(2), x, y, r, g, b, size,
bg(3)] with the unused ones (shape, x, y, background) zero.

Images are handed to the model in [-1, 1] (x0 = 2 image - 1, diffusion.py's convention).
Shapes in names: B batch, H = W = task.resolution, C = 3, K condition.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsim.config import Spec
from jaxsim.testbeds.concept_images import diffusion, render

TRAIN_STREAM, EVAL_TRAIN, EVAL_HELDOUT = range(3)
SPLITS = ("train_classes", "heldout")
COND_LAYOUTS = ("concepts", "official")
OFFICIAL_RGB, OFFICIAL_SIZE, OFFICIAL_DIM = 4, 7, 11    # where rgb and size sit in the 11 dims


class Batch(NamedTuple):
    x_t_BxHxWxC: jax.Array      # noised images (model input)
    t_B: jax.Array              # int32 timestep of each example
    eps_BxHxWxC: jax.Array      # the noise added (the target)
    cond_BxK: jax.Array         # concept vector of each image
    x0_BxHxWxC: jax.Array       # the clean images in [-1, 1]
    class_B: jax.Array          # int32 concept class (0 red-big .. 3 blue-small)


def cond_dim(spec: Spec) -> int:
    return 4 if spec.task.cond_layout == "concepts" else OFFICIAL_DIM


def vocab_size(spec: Spec) -> int:
    """For the unet: the condition's dimension K."""
    return cond_dim(spec)


def seq_len(spec: Spec) -> int:
    """For the unet: the image side H (= W)."""
    return spec.task.resolution


def condition(rgb_Bx3: jax.Array, radius_B: jax.Array, layout: str) -> jax.Array:
    """[B, K] the concept vector of colour and radius in the chosen layout."""
    compact = jnp.concatenate([rgb_Bx3, radius_B[:, None]], axis=1).astype(jnp.float32)
    if layout == "concepts":
        return compact
    pad_lo, pad_hi = OFFICIAL_RGB, OFFICIAL_DIM - OFFICIAL_SIZE - 1
    return jnp.pad(compact, ((0, 0), (pad_lo, pad_hi)))


def concepts_of(cond_BxK: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(rgb [B, 3], radius [B]) back out of a concept vector of either layout."""
    start = 0 if cond_BxK.shape[-1] == 4 else OFFICIAL_RGB
    return cond_BxK[:, start:start + 3], cond_BxK[:, start + 3]


def constants(run_key: jax.Array, spec: Spec, hparams: dict) -> tuple:
    """No per-run constants: the concept signals are read from hparams."""
    return ()


def sample(key: jax.Array, consts: tuple, spec: Spec, hparams: dict, batch_size: int,
           split: str = "train") -> Batch:
    """`batch_size` rendered images of the split's classes, with their conditions and the
    diffusion corruption (pure and jittable)."""
    t = spec.task
    k_class, k_draw, k_noise = jax.random.split(key, 3)
    sep_col, sep_size = hparams["task"]["sep_col"], hparams["task"]["sep_size"]
    heldout = split == "heldout"
    if heldout:
        class_B = jnp.full((batch_size,), render.HELDOUT, jnp.int32)
    else:
        class_B = jax.random.randint(k_class, (batch_size,), 0, len(render.TRAIN_CLASSES))
        class_B = jnp.asarray(render.TRAIN_CLASSES, jnp.int32)[class_B]
    images, concepts = render.draw(k_draw, class_B, sep_col, sep_size, t.resolution,
                                   t.blur_sigma, t.noise_level, jitter=not heldout)
    x0 = images * 2 - 1
    x_t, t_B, eps = diffusion.corrupt(k_noise, x0, spec)
    cond = condition(concepts.rgb_Bx3, concepts.radius_B, t.cond_layout)
    return Batch(x_t, t_B, eps, cond, x0, class_B)


def train_batch(consts, run_key: jax.Array, step: jax.Array, spec: Spec, hparams: dict) -> Batch:
    key = jax.random.fold_in(jax.random.fold_in(run_key, TRAIN_STREAM), step)
    return sample(key, consts, spec, hparams, spec.train.batch_size, "train")


def eval_batch(consts, run_key: jax.Array, spec: Spec, hparams: dict, split: str) -> Batch:
    """The split's fixed batch (images, timesteps and noise the same at every evaluation)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    stream = EVAL_TRAIN if split == "train_classes" else EVAL_HELDOUT
    return sample(jax.random.fold_in(run_key, stream), consts, spec, hparams,
                  spec.train.eval_batch_size, split)


def inputs(batch: Batch) -> tuple:
    return batch.x_t_BxHxWxC, batch.t_B, batch.cond_BxK


def loss(eps_pred_BxHxWxC: jax.Array, batch: Batch) -> jax.Array:
    return diffusion.eps_loss(eps_pred_BxHxWxC, batch.eps_BxHxWxC)


def evaluate(eps_pred_BxHxWxC: jax.Array, batch: Batch) -> dict:
    """The ε loss on the split's fixed batch (mean over timesteps drawn uniformly)."""
    return {"loss": loss(eps_pred_BxHxWxC, batch)}
