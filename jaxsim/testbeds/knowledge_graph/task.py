"""The knowledge-graph task's batches and objective (the graph, walks and prompts: `facts.py`).

Training batches: forward walks of `walk_length` trained facts from uniform start entities, the
loss on every entity after the first (`loss_mask_BxL`). Evaluation batches, one per split
(`direct`, `logical`, `compositional` = fact kinds 0, 1, 2): facts of that kind drawn uniformly,
each asked as the last fact of a walk of the training length (`walk_length - 1` trained context
facts drawn backwards into the subject, `facts.fact_prompts`), the loss and accuracy on the
answer only. The ground truth is the batch's last token. A split with no facts (e.g.
`compositional_frac: 0`) reports NaN.

Shapes: B batch, L = 2 walk_length + 1 tokens.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsim.testbeds import streams
from jaxsim.testbeds.knowledge_graph import facts

SPLITS = facts.KINDS
TRAIN_STREAM, EVAL_STREAM = 1, 2      # facts.GRAPH_STREAM is 0


class Batch(NamedTuple):
    tokens_BxL: jax.Array       # int32 walk tokens e_0 r_0 e_1 ... e_L (answers included)
    loss_mask_BxL: jax.Array    # bool: the entity tokens a model is scored on


def vocab_size(spec) -> int:
    t = spec.task
    return t.num_entities + 2 * t.num_cycles * t.max_hop


def seq_len(spec) -> int:
    return 2 * spec.task.walk_length + 1


def training_walks(key: jax.Array, g: facts.Graph, batch_size: int, num_facts: int) -> Batch:
    start_key, walk_key = jax.random.split(key)
    start = jax.random.randint(start_key, (batch_size,), 0, g.object_NxR.shape[0], jnp.int32)
    tokens = facts.interleave(g, *facts.walk(walk_key, g, start, num_facts))
    position = jnp.arange(tokens.shape[1])
    mask = (position % 2 == 0) & (position > 0)
    return Batch(tokens, jnp.broadcast_to(mask, tokens.shape))


def draw_facts(key: jax.Array, g: facts.Graph, kind: int, batch_size: int
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """([B] subjects, [B] relations, [] any such fact) uniform over the facts of `kind`."""
    num_rel = g.kind_NxR.shape[1]
    mask = (g.kind_NxR == kind).reshape(-1)
    flat = jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf), shape=(batch_size,))
    flat = jnp.where(mask.any(), flat, 0).astype(jnp.int32)
    return flat // num_rel, flat % num_rel, mask.any()


def query_batch(key: jax.Array, g: facts.Graph, spec, hparams, subject_B: jax.Array,
                relation_B: jax.Array, num_context: int) -> Batch:
    """Each fact asked after `num_context` trained facts, its object appended (the target)."""
    prompt, _ = facts.fact_prompts(key, g, spec, hparams, subject_B, relation_B, num_context)
    tokens = jnp.concatenate([prompt, g.object_NxR[subject_B, relation_B][:, None]], axis=1)
    mask = jnp.arange(tokens.shape[1]) == tokens.shape[1] - 1
    return Batch(tokens.astype(jnp.int32), jnp.broadcast_to(mask, tokens.shape))


def sample(key: jax.Array, consts: facts.Graph, spec, hparams: dict, batch_size: int,
           split: str = "train") -> Batch:
    """`batch_size` training walks (split "train", or "id" as the activations source and
    other testbeds call the training distribution) or queries of a held-out split."""
    g = facts.graph(consts)
    length = spec.task.walk_length
    if split in ("train", "id"):
        return training_walks(key, g, batch_size, length)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: train, {', '.join(SPLITS)}")
    fact_key, context_key = jax.random.split(key)
    subject, relation, any_fact = draw_facts(fact_key, g, SPLITS.index(split), batch_size)
    batch = query_batch(context_key, g, spec, hparams, subject, relation, length - 1)
    return batch._replace(loss_mask_BxL=batch.loss_mask_BxL & any_fact)


def train_batch(consts, run_key: jax.Array, step: jax.Array, spec, hparams: dict) -> Batch:
    key = streams.train_key(run_key, TRAIN_STREAM, step)
    return sample(key, consts, spec, hparams, spec.train.batch_size, "train")


def eval_batch(consts, run_key: jax.Array, spec, hparams: dict, split: str) -> Batch:
    """The fixed evaluation batch of `split` (the same at every evaluation)."""
    key = jax.random.fold_in(run_key, EVAL_STREAM + SPLITS.index(split))
    return sample(key, consts, spec, hparams, spec.train.eval_batch_size, split)


def _scored(logits_BxTxV: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    targets = batch.tokens_BxL[:, 1:]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets)
    right = (logits_BxTxV.argmax(-1) == targets).astype(ce.dtype)
    return ce, right, batch.loss_mask_BxL[:, 1:].astype(ce.dtype)


def loss(logits_BxTxV: jax.Array, batch: Batch) -> jax.Array:
    """Mean cross-entropy over the scored entity tokens."""
    ce, _, w = _scored(logits_BxTxV, batch)
    return jnp.sum(ce * w) / jnp.maximum(w.sum(), 1.0)


def weight(batch: Batch) -> jax.Array:
    return batch.loss_mask_BxL[:, 1:].sum().astype(jnp.float32)


def evaluate(logits_BxTxV: jax.Array, batch: Batch) -> dict:
    """Loss and top-1 accuracy of the answers (NaN for a split without facts)."""
    ce, right, w = _scored(logits_BxTxV, batch)
    return {"loss": jnp.sum(ce * w) / w.sum(), "accuracy": jnp.sum(right * w) / w.sum()}
