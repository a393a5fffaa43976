"""The random streams every task's batches come from, so a run's data is a pure function of its
key: training step s draws `sample(fold_in(fold_in(run_key, train_stream), s))`, and each
held-out split is one fixed batch, `sample(fold_in(run_key, eval_streams[split]))`, the same at
every evaluation."""
from __future__ import annotations

from typing import Callable

import jax


def train_key(run_key: jax.Array, train_stream: int, step: jax.Array) -> jax.Array:
    """The key of training step `step`'s batch."""
    return jax.random.fold_in(jax.random.fold_in(run_key, train_stream), step)


def batches(sample: Callable, train_stream: int, eval_streams: dict[str, int]
            ) -> tuple[Callable, Callable]:
    """`train_batch(consts, run_key, step, spec, hparams)` and
    `eval_batch(consts, run_key, spec, hparams, split)` of a task whose batches all come from
    `sample(key, consts, spec, hparams, batch_size, split)`."""
    def train_batch(consts, run_key: jax.Array, step: jax.Array, spec, hparams: dict):
        return sample(train_key(run_key, train_stream, step), consts, spec, hparams, spec.train.batch_size, "id")

    def eval_batch(consts, run_key: jax.Array, spec, hparams: dict, split: str):
        key = jax.random.fold_in(run_key, eval_streams.get(split, train_stream))
        return sample(key, consts, spec, hparams, spec.train.eval_batch_size, split)

    return train_batch, eval_batch
