"""One transformer run: `init`, `train_step`, `evaluate`, `train_interval` — pure, no I/O.

A run is identified by its key (from its seed) and its hyperparameters; its training batch at
step s is a pure function of (key, s), so a run can be split into intervals, checkpointed and
resumed without changing a bit. State is a plain dict pytree: vmap, sharding and orbax see one
thing.
"""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsim import models, testbeds
from jaxsim.config import ConfigError, Spec
from jaxsim.training import schedules

State = dict[str, Any]  # {"params", "opt_state", "step"}
INIT_STREAM = 1000      # sub-stream of the run key used for parameter init


def model_of(spec: Spec):
    testbed = testbeds.of(spec)
    return models.build(spec.model, testbed.vocab_size(spec), testbed.seq_len(spec))


def optimizer(hparams: dict, name: str = "adamw") -> optax.GradientTransformation:
    """AdamW (or plain SGD, `train.optimizer`) with global-norm clipping (grad_clip 0 = off);
    every hyperparameter may be a traced per-run scalar. The learning-rate schedule (warm-up
    and decay, `schedules.factor`) scales the update in `train_step`, not here, so the optimizer
    state has the same structure for every schedule.
    SGD adds weight_decay * w to the gradient (no momentum: the paper's plain SGD)."""
    hp = hparams["train"]
    clip = jnp.where(hp["grad_clip"] > 0, hp["grad_clip"], jnp.inf)
    if name == "sgd":
        return optax.chain(optax.clip_by_global_norm(clip),
                           optax.add_decayed_weights(hp["weight_decay"]), optax.sgd(hp["lr"]))
    return optax.chain(
        optax.clip_by_global_norm(clip),
        optax.adamw(hp["lr"], b1=hp["beta1"], b2=hp["beta2"], weight_decay=hp["weight_decay"]),
    )


def init(key: jax.Array, spec: Spec, hparams: dict) -> State:
    testbed = testbeds.of(spec)

    def batch_inputs():
        batch = testbed.eval_batch(testbed.constants(key, spec, hparams), key, spec, hparams,
                                   testbed.splits[0])
        return testbed.objective.inputs(batch)

    # shapes only: a batch of one of zeros, so the init program holds no task computation
    inputs = jax.tree.map(lambda s: jnp.zeros((1,) + s.shape[1:], s.dtype),
                          jax.eval_shape(batch_inputs))
    params = model_of(spec).init(jax.random.fold_in(key, INIT_STREAM), *inputs)["params"]
    params = start_params(models.scale_init(spec.model, params, hparams), spec, hparams)
    return {"params": params, "opt_state": optimizer(hparams, spec.train.optimizer).init(params),
            "step": jnp.zeros((), jnp.int32)}


def start_params(params, spec: Spec, hparams: dict):
    """A run's initial parameters: `params`, or in a staged run whose testbed starts from its
    source (`Testbed.stage == "init"`) the source run's saved parameters, which must have the
    same tree and shapes (checked while tracing: one line naming the parameter otherwise)."""
    if spec.source is None or testbeds.of(spec).stage != "init":
        return params
    source = hparams["source"]["params"]
    theirs = dict(jax.tree_util.tree_flatten_with_path(source)[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        other = theirs.get(path)
        if other is None or other.shape != leaf.shape:
            raise ConfigError(f"init.source '{spec.init.source}': parameter "
                              f"{jax.tree_util.keystr(path)} has shape "
                              f"{None if other is None else tuple(other.shape)} in the source "
                              f"but {tuple(leaf.shape)} here (the task's vocabulary or context "
                              f"length differs from the source's)")
    return jax.tree.map(lambda p, s: jnp.asarray(s, p.dtype), params, source)


def outputs(params, spec: Spec, batch):
    """The model's outputs on a batch (logits for the gpt, one scalar per entry for the encoder)."""
    return model_of(spec).apply({"params": params}, *testbeds.of(spec).objective.inputs(batch))


def source_outputs(spec: Spec, hparams: dict, batch):
    """The frozen source model's outputs on `batch` (a staged run's `hparams["source"]`, no
    gradient through it) when the objective reads them (`Objective.uses_source`), else None."""
    objective = testbeds.of(spec).objective
    if not objective.uses_source:
        return None
    params = jax.lax.stop_gradient(hparams["source"]["params"])
    return model_of(spec.source).apply({"params": params}, *objective.inputs(batch))


def _objective_args(spec: Spec, out, batch, hparams: dict) -> tuple:
    """(outputs, batch) and, for an objective that reads the source model, its outputs."""
    source = source_outputs(spec, hparams, batch)
    return (out, batch) if source is None else (out, batch, source)


def loss_fn(params, spec: Spec, batch, hparams: dict | None = None) -> jax.Array:
    return testbeds.of(spec).objective.loss(
        *_objective_args(spec, outputs(params, spec, batch), batch, hparams))


def per_example(name: str) -> bool:
    """A batch field with one row per example: its name's shape suffix starts with B (`_B`,
    `_BxL`, ...); other fields (a run's rotation, probes) are shared by the whole batch."""
    return re.search(r"_B(x|$)", name) is not None


def microbatches(batch, size: int) -> tuple[dict, int]:
    """The batch's per-example fields as [n, size, ...] (examples [i*size, (i+1)*size) in
    microbatch i) and n."""
    fields = {k: v for k, v in batch._asdict().items() if per_example(k)}
    rows = {v.shape[0] for v in fields.values()}
    if len(rows) != 1 or next(iter(rows)) % size:
        raise ValueError(f"per-example fields {sorted(fields)} have leading sizes {sorted(rows)}; "
                         f"they must agree and be a multiple of the microbatch size {size}")
    n = next(iter(rows)) // size
    return {k: v.reshape((n, size) + v.shape[1:]) for k, v in fields.items()}, n


def value_and_grad(params, spec: Spec, batch, hparams: dict | None = None
                   ) -> tuple[jax.Array, Any]:
    """Loss and gradient on the batch; with `train.microbatch_size` the batch is split into
    passes under lax.scan, each weighted by its share of the loss's normaliser (its examples, or
    the objective's `weight`), so the sum is the whole batch's loss and gradient — the same
    numbers up to float summation order, with a fraction of the activations alive at once."""
    size = spec.train.microbatch_size
    if not size or size >= spec.train.batch_size:
        return jax.value_and_grad(loss_fn)(params, spec, batch, hparams)
    parts, n = microbatches(batch, size)
    weight = testbeds.of(spec).objective.weight
    if weight is None:
        share_N = jnp.full((n,), 1.0 / n, jnp.float32)
    else:
        w_N = jax.vmap(lambda part: weight(batch._replace(**part)))(parts)
        share_N = w_N / jnp.maximum(w_N.sum(), 1.0)

    def one(acc, xs):
        part, share = xs
        loss, grads = jax.value_and_grad(
            lambda p: share * loss_fn(p, spec, batch._replace(**part), hparams))(params)
        return jax.tree.map(jnp.add, acc, grads), loss

    grads, losses_N = jax.lax.scan(one, jax.tree.map(jnp.zeros_like, params), (parts, share_N))
    return losses_N.sum(), grads


def train_step(state: State, consts, key: jax.Array, spec: Spec, hparams: dict
               ) -> tuple[State, jax.Array]:
    """One optimizer step on the fresh batch of step `state["step"]`."""
    batch = testbeds.of(spec).train_batch(consts, key, state["step"], spec, hparams)
    loss, grads = value_and_grad(state["params"], spec, batch, hparams)
    updates, opt_state = optimizer(hparams, spec.train.optimizer).update(
        grads, state["opt_state"], state["params"])
    scale = schedules.factor(state["step"], spec, hparams)
    updates = jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
    params = optax.apply_updates(state["params"], updates)
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss


def fixed_inputs(key: jax.Array, spec: Spec, hparams: dict) -> dict:
    """What a run's intervals share: the testbed's per-run constants and its fixed evaluation
    batches, {"consts", "eval": {split: batch}} — pure functions of (key, spec, hparams), so the
    sweep engine computes them once per chunk, in a program compiled at LLVM -O0, and passes
    them to every interval (`train_interval(..., fixed)`): sampling them inside the interval
    program was ~40 % of its compile time (docs/performance.md)."""
    testbed = testbeds.of(spec)
    consts = testbed.constants(key, spec, hparams)
    return {"consts": consts,
            "eval": {split: testbed.eval_batch(consts, key, spec, hparams, split)
                     for split in testbed.splits}}


def eval_batch(consts, key: jax.Array, spec: Spec, hparams: dict, split: str, batches=None):
    """The fixed evaluation batch of `split`: from `batches` (`fixed_inputs(...)["eval"]`) when
    given, else sampled."""
    if batches is not None:
        return batches[split]
    return testbeds.of(spec).eval_batch(consts, key, spec, hparams, split)


def evaluate(params, consts, key: jax.Array, spec: Spec, hparams: dict, batches=None
             ) -> dict[str, jax.Array]:
    """The objective's metrics on each held-out split (fixed batches per run; `batches` =
    `fixed_inputs(...)["eval"]`, else sampled here)."""
    testbed = testbeds.of(spec)
    objective = testbed.objective
    out = {}
    for split in testbed.splits:
        batch = eval_batch(consts, key, spec, hparams, split, batches)
        args = _objective_args(spec, outputs(params, spec, batch), batch, hparams)
        for name, value in objective.evaluate(*args).items():
            out[f"{name}_{split}"] = value
    return out


def scan_interval(state: dict, key: jax.Array, spec: Spec, hparams: dict, step_fn, eval_fn,
                  fixed: dict | None = None) -> tuple[dict, dict[str, jax.Array]]:
    """`eval_every` calls of `step_fn(state, consts, key, spec, hparams)` under lax.scan, then
    `eval_fn(state, consts, key, spec, hparams, eval_batches)`; returns (state, metrics row
    with train_loss). `consts` are the testbed's per-run constants and `eval_batches` its fixed
    evaluation batches: from `fixed` (`fixed_inputs`) when given, else computed here."""
    consts = (fixed["consts"] if fixed is not None
              else testbeds.of(spec).constants(key, spec, hparams))

    def body(carry, _):
        return step_fn(carry, consts, key, spec, hparams)

    state, losses = jax.lax.scan(body, state, None, length=spec.train.eval_every)
    metrics = eval_fn(state, consts, key, spec, hparams,
                      fixed["eval"] if fixed is not None else None)
    metrics["train_loss"] = losses.mean()
    return state, metrics


def train_interval(state: State, key: jax.Array, spec: Spec, hparams: dict,
                   fixed: dict | None = None) -> tuple[State, dict[str, jax.Array]]:
    """`eval_every` steps under lax.scan, then one evaluation; returns the metrics row.
    `fixed`: the run's `fixed_inputs`, if already computed."""
    return scan_interval(state, key, spec, hparams, train_step,
                         lambda st, *args: evaluate(st["params"], *args), fixed)


def metric_names(spec: Spec) -> list[str]:
    """Names of the per-evaluation metrics `train_interval` returns."""
    return testbeds.of(spec).metric_names(spec)


def num_intervals(spec: Spec) -> int:
    return spec.train.steps // spec.train.eval_every


def as_arrays(hparams: dict) -> dict:
    """Python-scalar hparams -> float32 / int32 jax arrays (the vmappable pytree)."""
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.int32 if isinstance(v, int) else jnp.float32),
                        hparams)
