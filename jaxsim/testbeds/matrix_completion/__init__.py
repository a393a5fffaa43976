"""Abrupt learning: low-rank matrix completion as masked-language modelling (Gopalani, Lubana,
Hu 2024). A BERT-style encoder reads the n x n matrix X = U V^T as n^2 value tokens, a share
masked, and predicts every entry; the loss plateaus at the copy solution, then drops.

Split: id. Metrics: eval_mse (all entries, the paper's loss), eval_mse_masked,
eval_mse_observed, and the copy baseline (observed entries copied, 0 for masked) copy_mse,
copy_mse_masked on the same matrices.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from jaxsim.config import ConfigError, field
from jaxsim.testbed import Analysis, Derived, Objective, Testbed
from jaxsim.testbeds.matrix_completion import task
from jaxsim.training.objectives import masked_mse

LABELS = {"task.mask_prob": "mask probability", "task.rank": "rank r",
          "task.matrix_size": "matrix size n"}

# written by `jaxsim analyze`: mean attention maps inside the plateau and at the end, with
# each head's same-row / same-column scores
ATTENTION = "analysis_attention.npz"


@dataclass(frozen=True)
class MatrixCompletionConfig:
    name: str = "matrix_completion"
    matrix_size: int = field(7, min=2, doc="n, an n x n matrix is n^2 tokens")
    rank: int = field(2, dynamic="max", min=1,
                      doc="r, rank of X = U V^T (factor columns beyond r are masked to zero)")
    mask_prob: float = field(0.3, dynamic=True, min=0.0, max=0.95,
                             doc="probability that an entry is masked (to be completed)")
    factor_dist: str = field("uniform", choices=("uniform", "gaussian", "laplace"),
                             doc="distribution of the entries of U and V")
    factor_scale: float = field(1.0, dynamic=True, min=0.0, min_exclusive=True,
                                doc="uniform: U[-s, s]; gaussian: std s; laplace: scale s")


def _check_rank(cfg, where: str) -> None:
    """A rank-r matrix of size n needs r <= n."""
    if cfg.task.rank > cfg.task.matrix_size:
        raise ConfigError(f"{where}task.rank ({cfg.task.rank}) must be <= task.matrix_size "
                          f"({cfg.task.matrix_size})")


def _inputs(batch):
    return (batch.tokens_BxP, batch.values_BxP)


def _mse(preds_BxP, batch):
    return jnp.mean((preds_BxP - batch.values_BxP) ** 2)


def copy_baseline(batch):
    """[B, P] the plateau solution: observed entries copied, masked ones predicted as 0."""
    return jnp.where(batch.masked_BxP, 0.0, batch.values_BxP)


def _evaluate(preds, batch) -> dict:
    return {"eval_mse": _mse(preds, batch),
            "eval_mse_masked": masked_mse(preds, batch.values_BxP, batch.masked_BxP),
            "eval_mse_observed": masked_mse(preds, batch.values_BxP, ~batch.masked_BxP),
            "copy_mse": _mse(copy_baseline(batch), batch),
            "copy_mse_masked": masked_mse(copy_baseline(batch), batch.values_BxP,
                                          batch.masked_BxP)}


def _analyze(request):
    from jaxsim.testbeds.matrix_completion import analysis
    return analysis.analyze_completion(request.out, request.cfg, request.rows,
                                       request.num_sequences)


def _figures(request):
    from jaxsim.testbeds.matrix_completion import figures
    return figures.draw(request.out, request.axes, request.rows, request.metrics)


def _summary_of_analysis(doc) -> dict:
    """Per run: whether its masked loss dropped, and the plateau length of those that did (a
    run without a drop has only a lower bound: left out of the mean, counted by `drop`)."""
    return {r["run_id"]: {"drop": "dropped" if r["plateau"]["dropped"] else "no drop",
                          "plateau_length": (r["plateau"]["length"] if r["plateau"]["dropped"]
                                             else None)}
            for r in doc["runs"]}


# each run against its own copy baseline (its matrices' own: < 1 beats copying)
SUMMARY = ("eval_mse_id", "eval_mse_masked_id",
           Derived("masked_vs_copy_id", lambda m: m["eval_mse_masked_id"] / m["copy_mse_masked_id"],
                   "masked-entry MSE / the run's own copy baseline's (< 1: beyond copying)"))

OBJECTIVE = Objective(_inputs, _mse, _evaluate,
                      ("eval_mse", "eval_mse_masked", "eval_mse_observed", "copy_mse",
                       "copy_mse_masked"))

TESTBED = Testbed(
    name="matrix_completion", config=MatrixCompletionConfig, models=("encoder",),
    splits=task.SPLITS, constants=task.constants, train_batch=task.train_batch,
    eval_batch=task.eval_batch, vocab_size=task.vocab_size, seq_len=task.seq_len,
    sample=task.sample, objective=OBJECTIVE, rules=(_check_rank,),
    analysis=Analysis(_analyze), figures=_figures, labels=LABELS,
    summary_metrics=SUMMARY, summary_analysis=_summary_of_analysis, unit="entries", per_example=lambda spec: spec.task.matrix_size ** 2,
    doc="abrupt learning: low-rank matrix completion with a BERT-style encoder")
