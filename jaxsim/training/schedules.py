"""Learning-rate schedules: a per-run multiplier on the optimizer's update, pure scalar math.

Every schedule is a per-run (vmapped) choice, its kind included: `train.schedule` is carried in
the hparams as its index in `SCHEDULES`, every kind's value is computed (a few scalar flops per
step) and the run's own is selected, so a sweep over kinds and knobs is one compile.

With n = step + 1 (the update's number, 1-based), W = train.warmup_steps, D = train.decay_steps
(0 = train.steps), f = train.min_lr_ratio:

    warm(n)  = min(1, n / max(W, 1))                      linear warm-up (all kinds)
    p(n)     = clip((n - W) / max(D - W, 1), 0, 1)        decay progress after the warm-up
    constant: warm(n)                                     (the behaviour before schedules)
    cosine:   warm(n) * (f + (1 - f) * (1 + cos(pi p)) / 2)
    linear:   warm(n) * (f + (1 - f) * (1 - p))
    rsqrt:    warm(n) * max(f, sqrt(T / max(n, T))),  T = max(W, 1)

cosine and linear reach the floor f * lr at update D and stay there; rsqrt is continuous at the
end of the warm-up and decays as 1 / sqrt(n). The multiplier scales the whole update (decoupled
weight decay included, as optax's adamw with a schedule does), so the optimizer state has the
same structure for every schedule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.config import Spec
from jaxsim.config.schema import SCHEDULES


def warmup(step: jax.Array, hparams: dict) -> jax.Array:
    """Linear warm-up: (step + 1) / warmup_steps, capped at 1."""
    steps = jnp.maximum(hparams["train"]["warmup_steps"], 1).astype(jnp.float32)
    return jnp.minimum(1.0, (step + 1).astype(jnp.float32) / steps)


def decay(step: jax.Array, spec: Spec, hparams: dict) -> jax.Array:
    """The post-warm-up factor of the run's schedule (1 for constant); every kind is computed and
    the run's own (`hparams["train"]["schedule"]`, an index into SCHEDULES) selected."""
    hp = hparams["train"]
    n = (step + 1).astype(jnp.float32)
    floor = jnp.asarray(hp["min_lr_ratio"], jnp.float32)
    warm_steps = jnp.asarray(hp["warmup_steps"], jnp.int32)
    end = jnp.where(hp["decay_steps"] > 0, hp["decay_steps"], spec.train.steps)
    span = jnp.maximum(end - warm_steps, 1).astype(jnp.float32)
    progress = jnp.clip((n - warm_steps.astype(jnp.float32)) / span, 0.0, 1.0)
    cosine = floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    linear = floor + (1.0 - floor) * (1.0 - progress)
    timescale = jnp.maximum(warm_steps, 1).astype(jnp.float32)
    rsqrt = jnp.maximum(floor, jnp.sqrt(timescale / jnp.maximum(n, timescale)))
    kind = hp["schedule"]
    return jnp.select([kind == SCHEDULES.index(name) for name in ("cosine", "linear", "rsqrt")],
                      [cosine, linear, rsqrt], 1.0)


def factor(step: jax.Array, spec: Spec, hparams: dict) -> jax.Array:
    """The multiplier on the update of step `step` (0-based): warm-up times the decay."""
    return warmup(step, hparams) * decay(step, spec, hparams)


def learning_rate(step: jax.Array, spec: Spec, hparams: dict) -> jax.Array:
    """The effective learning rate of the update taken at `step` (e.g. a state's "step"):
    train.lr times `factor`."""
    return hparams["train"]["lr"] * factor(step, spec, hparams)
