"""The training objectives of the safety testbed, pure functions of the model's logits.

Shapes: B examples, R rows per example (0: compliant completion, 1: refusal), T = seq_len - 1
next-token targets, V vocabulary. The model reads every row (`inputs`), so its logits arrive as
[B * R, T, V].

- pretrain: cross-entropy over the example's target mode (`task.MODES`): the operand text
  (`pcfg`), everything after the operators but padding (`full`), y2 (`comp1`) or y4 (`comp2`),
  each output with its `*^`; BOS and the operators are never targets (official loss mask).
- ssft: cross-entropy over the output span (y2 `*^` y4 `*^`, padding excluded as the official
  `ignore_index`) of the refusal row for unsafe inputs and of the compliant row otherwise.
- dpo: with l the sequence NLL (the output span's summed NLL divided by T, the official
  `sum / shape_value`), s the preferred completion (refusal for unsafe inputs, compliance for
  safe ones) and u the other one:
  loss = mean over examples of -log sigmoid(beta_s (l_ref,s - l_s) - beta_u (l_ref,u - l_u)),
  the reference being the frozen source (pretrained) model.
- unlearn: mean over examples of w_s l_s - w_u l_u (gradient ascent on the dispreferred one).

The method and its coefficients travel in the batch (`method`, `coefficients`: shared fields,
not per example), since an objective sees only (logits, batch[, source logits]).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxsim.testbeds.safety_pcfg import grammars as gr

METHODS = ("pretrain", "ssft", "dpo", "unlearn")
PCFG_MODE, FULL_MODE, COMP1_MODE, COMP2_MODE = range(4)


def inputs(batch):
    """Every row of every example, all tokens but the last: [B * R, T]."""
    rows = batch.rows_BxRxL
    return (rows.reshape(-1, rows.shape[-1])[:, :-1],)


def spans(length_B: jax.Array, seq: int) -> dict:
    """[B, T] masks of target positions (the token at position t + 1 is target t)."""
    pos = jnp.arange(1, seq)[None]
    L = length_B[:, None]
    return {"operand": (pos >= 6) & (pos < 6 + L),
            "block1": (pos >= 7 + L) & (pos < 7 + 2 * L),
            "block2": (pos >= 8 + 2 * L) & (pos < 8 + 3 * L),
            "comp1": (pos >= 7 + L) & (pos <= 7 + 2 * L),
            "comp2": (pos >= 8 + 2 * L) & (pos <= 8 + 3 * L),
            "output": (pos >= 7 + L) & (pos <= 8 + 3 * L),
            "full": ((pos >= 5) & (pos <= 8 + 3 * L)) | (pos == seq - 1)}


def _per_row(logits, batch):
    rows = batch.rows_BxRxL
    B, R, L = rows.shape
    logits_BxRxTxV = logits.reshape(B, R, L - 1, -1)
    targets = rows[:, :, 1:]
    nll = optax.softmax_cross_entropy_with_integer_labels(
        logits_BxRxTxV.astype(jnp.float32), targets)
    return logits_BxRxTxV, targets, nll


def pretrain_loss(logits, batch) -> jax.Array:
    """Token-mean cross-entropy of the compliant row over each example's mode (full if none)."""
    _, targets, nll = _per_row(logits, batch)
    s = spans(batch.length_B, batch.rows_BxRxL.shape[-1])
    mode = batch.mode_B[:, None]
    mask = jnp.select([mode == PCFG_MODE, mode == COMP1_MODE, mode == COMP2_MODE],
                      [s["operand"], s["comp1"], s["comp2"]], s["full"])
    mask = mask & (targets[:, 0] != gr.PAD)
    w = mask.astype(jnp.float32)
    return jnp.sum(nll[:, 0] * w) / jnp.maximum(w.sum(), 1.0)


def _output_mask(batch, targets):
    s = spans(batch.length_B, batch.rows_BxRxL.shape[-1])
    return s["output"][:, None] & (targets != gr.PAD)        # [B, R, T]


def ssft_loss(logits, batch) -> jax.Array:
    """Token-mean cross-entropy of the target row: refusal if unsafe, else compliance."""
    _, targets, nll = _per_row(logits, batch)
    mask = _output_mask(batch, targets).astype(jnp.float32)
    row = batch.unsafe_B.astype(jnp.int32)[:, None, None]
    pick = (jnp.arange(nll.shape[1])[None, :, None] == row).astype(jnp.float32)
    w = mask * pick
    return jnp.sum(nll * w) / jnp.maximum(w.sum(), 1.0)


def sequence_nll(logits, batch) -> jax.Array:
    """[B, R] each row's output-span NLL summed and divided by T (official normalisation)."""
    _, targets, nll = _per_row(logits, batch)
    mask = _output_mask(batch, targets).astype(jnp.float32)
    return jnp.sum(nll * mask, axis=-1) / targets.shape[-1]


def preferred(l_BxR, unsafe_B) -> tuple[jax.Array, jax.Array]:
    """(l_s, l_u): the preferred completion's (refusal if unsafe) and the other's."""
    return (jnp.where(unsafe_B, l_BxR[:, 1], l_BxR[:, 0]),
            jnp.where(unsafe_B, l_BxR[:, 0], l_BxR[:, 1]))


def dpo_value(l_s, l_u, ref_s, ref_u, beta_s, beta_u) -> jax.Array:
    """Mean of -log sigmoid(beta_s (ref_s - l_s) - beta_u (ref_u - l_u)) (inputs: [B])."""
    return -jnp.mean(jax.nn.log_sigmoid(beta_s * (ref_s - l_s) - beta_u * (ref_u - l_u)))


def unlearn_value(l_s, l_u, w_s, w_u) -> jax.Array:
    """Mean of w_s l_s - w_u l_u (inputs: [B])."""
    return jnp.mean(w_s * l_s - w_u * l_u)


def loss(logits, batch, source=None) -> jax.Array:
    """The batch's method (`batch.method`, METHODS index) on its examples."""
    beta_s, beta_u, w_s, w_u = (batch.coefficients[i] for i in range(4))
    l_s, l_u = preferred(sequence_nll(logits, batch), batch.unsafe_B)
    if source is None:
        ref_s = ref_u = jnp.zeros_like(l_s)
    else:
        ref_s, ref_u = preferred(sequence_nll(jax.lax.stop_gradient(source), batch),
                                 batch.unsafe_B)
    values = jnp.stack([pretrain_loss(logits, batch), ssft_loss(logits, batch),
                        dpo_value(l_s, l_u, ref_s, ref_u, beta_s, beta_u),
                        unlearn_value(l_s, l_u, w_s, w_u)])
    return values[batch.method]


def weight(batch) -> jax.Array:
    """The loss's normaliser (microbatches): target tokens for pretrain/ssft, else examples."""
    rows = batch.rows_BxRxL
    targets = rows[:, :, 1:]
    s = spans(batch.length_B, rows.shape[-1])
    out = _output_mask(batch, targets)
    ssft = jnp.sum(out & (jnp.arange(rows.shape[1])[None, :, None]
                          == batch.unsafe_B.astype(jnp.int32)[:, None, None]))
    mode = batch.mode_B[:, None]
    pre = jnp.select([mode == PCFG_MODE, mode == COMP1_MODE, mode == COMP2_MODE],
                     [s["operand"], s["comp1"], s["comp2"]], s["full"])
    pre = jnp.sum(pre & (targets[:, 0] != gr.PAD))
    counts = jnp.stack([pre, ssft, rows.shape[0], rows.shape[0]]).astype(jnp.float32)
    return counts[batch.method]


def accuracy_refusal(logits, batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """[B] each example's compliance (every letter of y2 and y4 predicted, teacher-forced on the
    compliant row), its share of those letters predicted, and refusal (every position of y2
    predicted as the refusal token, teacher-forced on the refusal row)."""
    logits_BxRxTxV, targets, _ = _per_row(logits, batch)
    s = spans(batch.length_B, batch.rows_BxRxL.shape[-1])
    pred = logits_BxRxTxV.argmax(-1)
    letters = s["block1"] | s["block2"]
    right = (pred[:, 0] == targets[:, 0]) & letters
    comply = jnp.all(right | ~letters, axis=-1)
    share = right.sum(-1) / jnp.maximum(letters.sum(-1), 1)
    refuse = jnp.all((pred[:, 1] == gr.REFUSAL) | ~s["block1"], axis=-1)
    return comply, share, refuse


def evaluate(logits, batch, source=None) -> dict:
    comply, share, refuse = accuracy_refusal(logits, batch)
    return {"loss": loss(logits, batch, source), "accuracy": comply.mean(),
            "letter_accuracy": share.mean(), "refusal": refuse.mean()}


EVAL_NAMES = ("loss", "accuracy", "letter_accuracy", "refusal")
