"""One run: `init`, `train_step`, `evaluate`, `train_interval`, `train` — pure, no I/O.

A run is identified by its key (from its seed) and its hyperparameters; its training batch at
step s is a pure function of (key, s), so a run can be split into intervals, checkpointed and
resumed without changing a bit. State is a plain dict pytree: vmap, sharding and orbax see one
thing.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsim import models, tasks
from jaxsim.config import Spec

State = dict[str, Any]  # {"params", "opt_state", "step"}
INIT_STREAM = 1000      # sub-stream of the run key used for parameter init


def model_of(spec: Spec):
    task = tasks.get(spec.task.name)
    return models.build(spec.model, task.vocab_size(spec), spec.task.context_length)


def optimizer(hparams: dict) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; every hyperparameter may be a traced per-run scalar."""
    hp = hparams["train"]
    return optax.chain(
        optax.clip_by_global_norm(hp["grad_clip"]),
        optax.adamw(hp["lr"], b1=hp["beta1"], b2=hp["beta2"], weight_decay=hp["weight_decay"]),
    )


def init(key: jax.Array, spec: Spec, hparams: dict) -> State:
    model = model_of(spec)
    dummy = jnp.zeros((1, spec.task.context_length - 1), jnp.int32)
    params = model.init(jax.random.fold_in(key, INIT_STREAM), dummy)["params"]
    return {"params": params, "opt_state": optimizer(hparams).init(params),
            "step": jnp.zeros((), jnp.int32)}


def next_token_loss(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT).mean()


def loss_fn(params, spec: Spec, tokens_BxL: jax.Array) -> jax.Array:
    """Next-token cross-entropy at every position (inputs x_<L, targets x_>0)."""
    logits = model_of(spec).apply({"params": params}, tokens_BxL[:, :-1])
    return next_token_loss(logits, tokens_BxL[:, 1:])


def oracle_loss(batch) -> jax.Array:
    """Cross-entropy of the true next-token distribution on the same targets."""
    probs = jnp.take_along_axis(batch.next_probs_BxLxK[:, :-1], batch.tokens_BxL[:, 1:, None], -1)
    return -jnp.log(jnp.maximum(probs, 1e-30)).mean()


def train_step(state: State, consts, key: jax.Array, spec: Spec, hparams: dict
               ) -> tuple[State, jax.Array]:
    """One AdamW step on the fresh batch of step `state["step"]`."""
    task = tasks.get(spec.task.name)
    batch = task.train_batch(consts, key, state["step"], spec, hparams)
    loss, grads = jax.value_and_grad(loss_fn)(state["params"], spec, batch.tokens_BxL)
    updates, opt_state = optimizer(hparams).update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss


def evaluate(params, consts, key: jax.Array, spec: Spec, hparams: dict) -> dict[str, jax.Array]:
    """Model and oracle loss on each held-out split (fixed sequences per run)."""
    task = tasks.get(spec.task.name)
    out = {}
    for split in task.SPLITS:
        batch = task.eval_batch(consts, key, spec, hparams, split)
        out[f"eval_loss_{split}"] = loss_fn(params, spec, batch.tokens_BxL)
        out[f"oracle_loss_{split}"] = oracle_loss(batch)
    return out


def train_interval(state: State, key: jax.Array, spec: Spec, hparams: dict
                   ) -> tuple[State, dict[str, jax.Array]]:
    """`eval_every` steps under lax.scan, then one evaluation; returns the metrics row."""
    consts = tasks.get(spec.task.name).constants(key, spec, hparams)

    def body(carry, _):
        return train_step(carry, consts, key, spec, hparams)

    state, losses = jax.lax.scan(body, state, None, length=spec.train.eval_every)
    metrics = evaluate(state["params"], consts, key, spec, hparams)
    metrics["train_loss"] = losses.mean()
    return state, metrics


def metric_names(spec: Spec) -> list[str]:
    """Names of the per-evaluation metrics `train_interval` returns."""
    splits = tasks.get(spec.task.name).SPLITS
    return ["train_loss"] + [f"{kind}_{s}" for s in splits for kind in ("eval_loss", "oracle_loss")]


def num_intervals(spec: Spec) -> int:
    return spec.train.steps // spec.train.eval_every


def train(key: jax.Array, spec: Spec, hparams: dict) -> tuple[State, dict[str, jax.Array]]:
    """A whole run in one scan: metrics [E] per name, evaluated every `eval_every` steps."""
    def body(state, _):
        return train_interval(state, key, spec, hparams)

    return jax.lax.scan(body, init(key, spec, hparams), None, length=num_intervals(spec))


def as_arrays(hparams: dict) -> dict:
    """Python-scalar hparams -> float32 / int32 jax arrays (the vmappable pytree)."""
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.int32 if isinstance(v, int) else jnp.float32),
                        hparams)
