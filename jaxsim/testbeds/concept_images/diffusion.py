"""DDPM machinery for the concept_images testbed: noise schedule, training corruption, ε loss,
the closed-form posterior, and ancestral (DDPM) and deterministic (DDIM) samplers.

Everything is pure and jittable; `sample` is a `lax.scan` over timesteps, vmappable over runs
(stacked params) and over conditions. `spec` is a jaxsim `Spec` (its `model` section is read:
model.timesteps, schedule, beta_start, beta_end, sample_steps, and the U-Net keys) or a
`ModelConfig` itself. Conventions: images x0 in [-1, 1], [B, H, W, C] (C = 3); timesteps are
integer indices t in 0..T-1 (t = 0 is the least noisy level, x_0 the data); the model sees t as a
float (jaxsim.models.unet). Schedule arrays are computed in float64 numpy from the static spec
and handed to jax as float32.

    q(x_t | x_0)       = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I),             ᾱ_t = prod_{s<=t} (1 - β_s)
    q(x_{t-1}|x_t,x_0) = N(β_t sqrt(ᾱ_{t-1}) / (1-ᾱ_t) x_0 + (1-ᾱ_{t-1}) sqrt(α_t) / (1-ᾱ_t) x_t,
                           β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) I),         ᾱ_{-1} = 1

Both samplers run on a subsequence τ of `steps` timesteps (evenly spaced in 0..T-1, rounded;
all T for DDPM by default, model.sample_steps for DDIM); on a subsequence DDPM uses the
respaced schedule β'_i = 1 - ᾱ_{τ_i} / ᾱ_{τ_{i-1}} (Nichol & Dhariwal), the same closed form.
Both end on the predicted x_0 of the last step (t = 0), so a model that predicts the true noise
of a fixed x_0 reproduces it exactly (tests/test_diffusion.py).

CPU step times (benchmarks/unet_workload.py's training program: U-Net forward + backward +
AdamW on a batch, random data; the 2-core machine shared by other jobs, load average ~9-10, so
an idle machine is faster), R runs in one compiled program:

    16x16, channels (8, 16), time_dim 32, batch 16:  R=8, sweep.vmap_size 1:  0.56 s/step
    16x16, channels (16, 32), time_dim 64, batch 32: R=8, vmap_size 1: 2.50 s; vmap_size 0: 3.33 s

Recommended for the 30-minute CPU sweep: the first (configs/concept_space.yaml's model) with
up to 8 runs. The U-Net's convolutions are matmuls over patches (jaxsim.models.unet.Conv): with
lax.conv the same step was ~6x slower inside the training scan on XLA:CPU.

The samplers start from x_T ~ N(0, I): the schedule must end with ᾱ_{T-1} ~ 0 (the testbed's
config rule `check_schedule` refuses more than 1e-3). DDPM's linear betas 1e-4..0.02 get there
over 1000 levels (4e-5) but not over 100 (0.36: x_T keeps 0.6 x0, and samples from pure noise
are noisy blobs whatever the model learned); the cosine schedule, or the betas rescaled by
1000/T, do.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import models

COSINE_OFFSET = 0.008     # s of the cosine schedule (Nichol & Dhariwal 2021)
MAX_BETA = 0.999          # their cap on the cosine schedule's betas
IMAGE_CHANNELS = 3


class Schedule(NamedTuple):
    """[T] float32 arrays of the noise schedule."""
    beta_T: jax.Array
    alpha_T: jax.Array
    alpha_bar_T: jax.Array


def _model(spec):
    """The ModelConfig of a Spec (or the ModelConfig itself)."""
    return getattr(spec, "model", spec)


def _alpha_bar64(spec) -> np.ndarray:
    """[T] ᾱ_t in float64 (numpy: the spec is static)."""
    m = _model(spec)
    if m.schedule == "cosine":
        f = np.cos((np.arange(m.timesteps + 1) / m.timesteps + COSINE_OFFSET)
                   / (1 + COSINE_OFFSET) * np.pi / 2) ** 2
        beta = np.minimum(1 - f[1:] / f[:-1], MAX_BETA)
    else:
        beta = np.linspace(m.beta_start, m.beta_end, m.timesteps, dtype=np.float64)
    return np.cumprod(1 - beta)


def schedule(spec) -> Schedule:
    """β_t, α_t = 1 - β_t and ᾱ_t for t = 0..T-1 (linear DDPM betas or the cosine schedule)."""
    alpha_bar = _alpha_bar64(spec)
    alpha = alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])
    return Schedule(*(jnp.asarray(a, jnp.float32) for a in (1 - alpha, alpha, alpha_bar)))


def _per_example(v_B: jax.Array, x: jax.Array) -> jax.Array:
    """[B] (or scalar) coefficients shaped to broadcast against x [B, ...] at equal rank."""
    v_B = jnp.broadcast_to(jnp.asarray(v_B, jnp.float32), x.shape[:1])
    return v_B.reshape(x.shape[:1] + (1,) * (x.ndim - 1))


def _f32(*arrays: np.ndarray) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def _posterior_tables(ab_t: np.ndarray, ab_prev: np.ndarray) -> tuple[jax.Array, ...]:
    """float64 closed forms, as float32: (coefficient of x0, coefficient of x_t, variance) of
    q(x_prev | x_t, x0) between levels with ᾱ = ab_t and ab_prev (computed in float64: 1 - ᾱ_t
    at small t loses digits in float32)."""
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    return _f32(beta * np.sqrt(ab_prev) / (1 - ab_t), (1 - ab_prev) * np.sqrt(alpha) / (1 - ab_t),
                beta * (1 - ab_prev) / (1 - ab_t))


def _prev(alpha_bar: np.ndarray) -> np.ndarray:
    return np.concatenate([[1.0], alpha_bar[:-1]])


def corrupt(key: jax.Array, x0_BxHxWxC: jax.Array, spec) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x_t, t_B int32 uniform over 0..T-1, ε ~ N(0, I)) with x_t = sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε."""
    t_key, eps_key = jax.random.split(key)
    t_B = jax.random.randint(t_key, x0_BxHxWxC.shape[:1], 0, _model(spec).timesteps, jnp.int32)
    eps = jax.random.normal(eps_key, x0_BxHxWxC.shape, jnp.float32)
    ab = _alpha_bar64(spec)
    signal_T, noise_T = _f32(np.sqrt(ab), np.sqrt(1 - ab))
    x_t = (_per_example(signal_T[t_B], x0_BxHxWxC) * x0_BxHxWxC
           + _per_example(noise_T[t_B], x0_BxHxWxC) * eps)
    return x_t, t_B, eps


def eps_loss(pred: jax.Array, eps: jax.Array) -> jax.Array:
    """Mean squared error of the ε prediction (over every pixel, channel and example)."""
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - eps))


def posterior(spec, x_t: jax.Array, x0_pred: jax.Array, t) -> tuple[jax.Array, jax.Array]:
    """(mean [x's shape], variance [B, 1, 1, 1]) of q(x_{t-1} | x_t, x_0 = x0_pred) at t ([B] or
    a scalar); at t = 0 the variance is 0 and the mean is x0_pred."""
    ab = _alpha_bar64(spec)
    c0_T, ct_T, var_T = _posterior_tables(ab, _prev(ab))
    mean = _per_example(c0_T[t], x_t) * x0_pred + _per_example(ct_T[t], x_t) * x_t
    return mean, _per_example(var_T[t], x_t)


def timesteps(spec, method: str = "ddpm", steps: int | None = None) -> np.ndarray:
    """[S] int32, ascending: the timesteps a sampler visits (evenly spaced in 0..T-1)."""
    m = _model(spec)
    if method not in ("ddpm", "ddim"):
        raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")
    steps = steps or (m.timesteps if method == "ddpm" else m.sample_steps)
    if not 1 <= steps <= m.timesteps:
        raise ValueError(f"steps ({steps}) must be in 1..model.timesteps ({m.timesteps})")
    return np.round(np.linspace(0, m.timesteps - 1, steps)).astype(np.int32)


def sample(apply_fn: Callable, params, spec, cond_BxK: jax.Array, key: jax.Array,
           method: str = "ddpm", steps: int | None = None, x_T: jax.Array | None = None, *,
           resolution: int | None = None, clip_x0: bool = True) -> jax.Array:
    """x_0 [B, H, W, C] generated from x_T (drawn with `key` if not given) by `apply_fn(params,
    x_t, t_B, cond_BxK) -> ε`: ancestral DDPM (fresh noise from `key` each step) or DDIM (η = 0,
    deterministic). `resolution` (H = W) is needed only without x_T (default: the spec's
    task.resolution). The predicted x_0 is clipped to [-1, 1] at each step unless `clip_x0` is
    False."""
    tau = timesteps(spec, method, steps)
    ab_S = _alpha_bar64(spec)[tau]
    ab_prev_S = _prev(ab_S)
    tables = (*_f32(np.sqrt(1 / ab_S), np.sqrt(1 / ab_S - 1), np.sqrt(ab_prev_S),
                    np.sqrt(1 - ab_prev_S)), *_posterior_tables(ab_S, ab_prev_S))
    init_key, step_key = jax.random.split(key)
    if x_T is None:
        side = resolution or spec.task.resolution
        x_T = jax.random.normal(init_key, (cond_BxK.shape[0], side, side, IMAGE_CHANNELS))
    batch = x_T.shape[0]

    def step(x, xs):
        i, t, recip, recip_m1, signal_prev, noise_prev, c0, ct, var = xs
        eps = apply_fn(params, x, jnp.full((batch,), t, jnp.int32), cond_BxK)
        x0 = recip * x - recip_m1 * eps
        x0 = jnp.clip(x0, -1.0, 1.0) if clip_x0 else x0
        if method == "ddim":
            return signal_prev * x0 + noise_prev * eps, None
        noise = jax.random.normal(jax.random.fold_in(step_key, i), x.shape, x.dtype)
        return c0 * x0 + ct * x + jnp.sqrt(var) * noise, None

    xs = (jnp.arange(len(tau), dtype=jnp.int32), jnp.asarray(tau), *tables)
    x0, _ = jax.lax.scan(step, x_T.astype(jnp.float32), xs, reverse=True)
    return x0


def apply(params, spec, x_t: jax.Array, t_B: jax.Array, cond_BxK: jax.Array,
          edit: Callable | None = None) -> jax.Array:
    """ε prediction of the U-Net jaxsim builds from spec.model (`models.build`, K and H read off
    the inputs); `edit(site, x)` replaces the per-level condition embeddings ("cond0", ...)."""
    model = models.build(_model(spec), cond_BxK.shape[-1], x_t.shape[1])
    return model.apply({"params": params}, x_t, t_B, cond_BxK, edit)


def init(key: jax.Array, spec, resolution: int, cond_dim: int) -> dict:
    """Fresh U-Net parameters for images [.., resolution, resolution, 3] and conditions [.., K]."""
    model = models.build(_model(spec), cond_dim, resolution)
    x = jnp.zeros((1, resolution, resolution, IMAGE_CHANNELS), jnp.float32)
    return model.init(key, x, jnp.zeros((1,), jnp.int32), jnp.zeros((1, cond_dim)))["params"]


def denoising_loss(params, spec, key: jax.Array, x0_BxHxWxC: jax.Array,
                   cond_BxK: jax.Array) -> jax.Array:
    """The DDPM training loss of one batch: corrupt x0 at random timesteps, predict ε, MSE."""
    x_t, t_B, eps = corrupt(key, x0_BxHxWxC, spec)
    return eps_loss(apply(params, spec, x_t, t_B, cond_BxK), eps)
