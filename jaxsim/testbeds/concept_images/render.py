"""The concept-image renderer (Park, Okawa, Lee, Lubana, Tanaka, NeurIPS 2024, "images_1" of the
official code): one Gaussian-blurred circle on a light background, drawn from concept values.

Concepts of one image: colour rgb (3), radius (1, in grid units), position xy (2), background rgb
(3). The pixel grid is linspace(-1, 1, H) on both axes with 'ij' indexing (x runs down the rows,
y along the columns, as the official meshgrid). The hard mask `|p - xy| < radius` is blurred by
a Gaussian of `blur_sigma` pixels in scipy.ndimage.gaussian_filter's convention (kernel radius
int(4 sigma + 0.5), 'reflect' borders), written as one H x H matrix B so the blur is B M B^T:
two matmuls, vectorised over any batch. image = m colour + (1 - m) background + noise, clipped
to [0, 1] (noise std `noise_level`, 1e-3 in the paper).

The 2 x 2 classes are (colour, size) = unravel(class, (2, 2)): 0 red-big, 1 red-small,
2 blue-big, 3 blue-small (held out of training). With c = sep_col (the colour concept signal),
red's mean is (0.5 + c/2, 0.5 - c/2, 0.5 - c/2) and blue's (0.5 - c/2, 0.5 - c/2, 0.5 + c/2),
each channel jittered uniformly within +-c/8; with s = sep_size, big's mean radius is
0.45 + s/2 and small's 0.45 - s/2, jittered uniformly within +-3s/8 (s = 0.4: big in
[0.5, 0.8], small in [0.1, 0.4], the paper's). Position is uniform in [-0.5, 0.5]^2, background
uniform in [0.8, 1]^3. `class_means` renders the paper's test images: class-mean colour and
radius, background 0.9, random position.

Shapes in names: B batch, H = W image side, C = 3 channels.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NUM_CLASSES, HELDOUT = 4, 3
CLASS_NAMES = ("red-big", "red-small", "blue-big", "blue-small")
TRAIN_CLASSES = (0, 1, 2)
SIZE_CENTRE = 0.45            # mean of the two size means
BACKGROUND = (0.8, 1.0)       # background channels uniform in this range
BACKGROUND_MEAN = 0.9
POSITION = 0.5                # centres uniform in [-POSITION, POSITION]^2


class Concepts(NamedTuple):
    """The concept values of a batch of images (all float32)."""
    rgb_Bx3: jax.Array
    radius_B: jax.Array
    xy_Bx2: jax.Array
    bg_Bx3: jax.Array


def colour_size(class_B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(colour_B: 0 red / 1 blue, size_B: 0 big / 1 small) of each class."""
    return class_B // 2, class_B % 2


def class_rgb(colour_B: jax.Array, sep_col: jax.Array) -> jax.Array:
    """[B, 3] mean colour of red (0) or blue (1) for colour signal c = sep_col (also for
    colour values beyond {0, 1}: the line through both means, 0.5 = their midpoint)."""
    h = sep_col / 2
    blue = jnp.asarray(colour_B, jnp.float32)[:, None]
    red_3, blue_3 = (jnp.stack([0.5 + h, 0.5 - h, 0.5 - h]),
                     jnp.stack([0.5 - h, 0.5 - h, 0.5 + h]))
    return red_3[None, :] + blue * (blue_3 - red_3)[None, :]


def class_radius(size_B: jax.Array, sep_size: jax.Array) -> jax.Array:
    """[B] mean radius of big (0) or small (1) (beyond {0, 1}: the line through both)."""
    return SIZE_CENTRE + sep_size / 2 - jnp.asarray(size_B, jnp.float32) * sep_size


def sample_concepts(key: jax.Array, class_B: jax.Array, sep_col: jax.Array,
                    sep_size: jax.Array, jitter: bool = True) -> Concepts:
    """Concept values of each image of its class: the class mean plus the uniform jitter
    (`jitter=False`: the class mean and background 0.9, the paper's test renders)."""
    k_col, k_size, k_xy, k_bg = jax.random.split(key, 4)
    b = class_B.shape[0]
    colour_B, size_B = colour_size(class_B)
    rgb_Bx3, radius_B = class_rgb(colour_B, sep_col), class_radius(size_B, sep_size)
    xy_Bx2 = jax.random.uniform(k_xy, (b, 2), minval=-POSITION, maxval=POSITION)
    if not jitter:
        return Concepts(rgb_Bx3, radius_B, xy_Bx2, jnp.full((b, 3), BACKGROUND_MEAN))
    rgb_Bx3 = rgb_Bx3 + jax.random.uniform(k_col, (b, 3), minval=-1, maxval=1) * sep_col / 8
    radius_B = radius_B + jax.random.uniform(k_size, (b,), minval=-1, maxval=1) * sep_size * 3 / 8
    bg_Bx3 = jax.random.uniform(k_bg, (b, 3), minval=BACKGROUND[0], maxval=BACKGROUND[1])
    return Concepts(rgb_Bx3, radius_B, xy_Bx2, bg_Bx3)


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """[H, H] the 1-d Gaussian filter of scipy.ndimage.gaussian_filter1d (truncate 4, mode
    'reflect': index -1 reads 0, index H reads H - 1) as a matrix: blurred = B @ x."""
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    mat = np.zeros((size, size))
    for i in range(size):
        for off, w in zip(offsets, weights):
            j = i + off
            while not 0 <= j < size:      # reflect (d c b a | a b c d), also past one period
                j = -j - 1 if j < 0 else 2 * size - j - 1
            mat[i, j] += w
    return mat.astype(np.float32)


def grid(size: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, size, dtype=np.float32)


def masks(concepts: Concepts, size: int, blur_sigma: float) -> jax.Array:
    """[B, H, W] the blurred circle masks m in [0, 1]."""
    g = jnp.asarray(grid(size))
    dx_BxH = g[None, :] - concepts.xy_Bx2[:, :1]
    dy_BxW = g[None, :] - concepts.xy_Bx2[:, 1:]
    dist2_BxHxW = dx_BxH[:, :, None] ** 2 + dy_BxW[:, None, :] ** 2
    mask_BxHxW = (dist2_BxHxW < concepts.radius_B[:, None, None] ** 2).astype(jnp.float32)
    if blur_sigma <= 0:
        return mask_BxHxW
    blur_HxH = jnp.asarray(blur_matrix(size, blur_sigma))
    return jnp.einsum("ij,bjk,lk->bil", blur_HxH, mask_BxHxW, blur_HxH)


def render(concepts: Concepts, size: int, blur_sigma: float,
           noise_BxHxWxC: jax.Array | None = None) -> jax.Array:
    """[B, H, W, 3] images in [0, 1]: m colour + (1 - m) background (+ noise), clipped."""
    m = masks(concepts, size, blur_sigma)[..., None]
    images = m * concepts.rgb_Bx3[:, None, None, :] + (1 - m) * concepts.bg_Bx3[:, None, None, :]
    if noise_BxHxWxC is not None:
        images = images + noise_BxHxWxC
    return jnp.clip(images, 0.0, 1.0)


def draw(key: jax.Array, class_B: jax.Array, sep_col, sep_size, size: int, blur_sigma: float,
         noise_level: float, jitter: bool = True) -> tuple[jax.Array, Concepts]:
    """(images [B, H, W, 3] in [0, 1], their concepts) of the given classes."""
    k_concepts, k_noise = jax.random.split(key)
    concepts = sample_concepts(k_concepts, class_B, sep_col, sep_size, jitter)
    noise = jax.random.normal(k_noise, (class_B.shape[0], size, size, 3)) * noise_level
    return render(concepts, size, blur_sigma, noise), concepts
