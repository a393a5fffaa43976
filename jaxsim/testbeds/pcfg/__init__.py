"""Formal languages (Menon, Shrivastava, Krueger, Lubana 2024): Dyck-2, prefix expressions and a
toy English PCFG, one sentence per sequence, exact samplers with per-token ground-truth features
and the exact set of legal next tokens; a small GPT per grammar and the grammaticality of its
own samples.

Split: id. Metrics: eval_loss (cross-entropy over the sentence and EOS targets) and legal_mass
(the model's probability on the legal next tokens).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxsim.config import ConfigError, field
from jaxsim.testbed import Analysis, Objective, Testbed
from jaxsim.testbeds.pcfg import behaviours, grammars, task
from jaxsim.training import objectives

LABELS = {"task.grammar": "grammar", "task.context_length": "context length"}

SAMPLES = "analysis_samples.npz"   # written by `jaxsim analyze`: the final checkpoint's model samples


@dataclass(frozen=True)
class PCFGConfig:
    name: str = "pcfg"
    grammar: str = field("dyck2", choices=tuple(grammars.GRAMMARS),
                         doc="the formal language (Dyck-2, prefix expressions, toy English); "
                             "one sentence per sequence, at most context_length - 2 tokens")
    context_length: int = field(64, min=2, doc="tokens per sequence (BOS, sentence, EOS, PAD)")


def _check_context(cfg, where: str) -> None:
    """The shortest sequence is BOS, two tokens, EOS."""
    if cfg.task.context_length < 4:
        raise ConfigError(f"{where}task.context_length must be >= 4 for task.name=pcfg "
                          f"(BOS, a sentence of >= 2 tokens, EOS), got "
                          f"{cfg.task.context_length}")


def legal_mass(logits_BxTxV: jax.Array, batch) -> jax.Array:
    """Mean over target positions of the model's probability on the legal next tokens."""
    probs = jax.nn.softmax(logits_BxTxV, axis=-1)
    legal = jnp.sum(probs * batch.legal_next_BxLxV[:, :-1].astype(probs.dtype), axis=-1)
    w = batch.loss_mask_BxL[:, 1:].astype(probs.dtype)
    return jnp.sum(legal * w) / jnp.maximum(w.sum(), 1.0)


def _evaluate(logits, batch) -> dict:
    return {"eval_loss": objectives.masked_lm_loss(logits, batch),
            "legal_mass": legal_mass(logits, batch)}


def _features(spec) -> tuple:
    return tuple(zip(task.feature_names(spec), task.feature_sizes(spec)))


def _analyze(request):
    from jaxsim.testbeds.pcfg import analysis
    return analysis.analyze_pcfg(request.out, request.cfg, request.rows, request.num_sequences)


def _figures(request):
    from jaxsim.testbeds.pcfg import figures
    return figures.draw(request.out, request.axes, request.rows, request.metrics,
                        request.cfg.task.grammar)


OBJECTIVE = Objective(objectives.lm_inputs, objectives.masked_lm_loss, _evaluate,
                      ("eval_loss", "legal_mass"), objectives.target_count)

def _summary_of_analysis(doc) -> dict:
    """Per run, at the final checkpoint: the share of its own samples that are grammatical
    and of their tokens that are legal."""
    return {r["run_id"]: {"grammatical": r["grammatical"][-1], "legal_tokens": r["legal_tokens"][-1]}
            for r in doc["runs"]}


TESTBED = Testbed(
    name="pcfg", config=PCFGConfig, models=("gpt",), splits=task.SPLITS,
    constants=task.constants, train_batch=task.train_batch, eval_batch=task.eval_batch,
    vocab_size=task.vocab_size, seq_len=task.seq_len, sample=task.sample, objective=OBJECTIVE,
    rules=(_check_context,), analysis=Analysis(_analyze), figures=_figures, labels=LABELS,
    unit="tokens", per_example=lambda spec: spec.task.context_length, features=_features,
    points_per_sequence=task.points_per_sequence, behaviours=behaviours.BEHAVIOURS,
    summary_metrics=("eval_loss_id", "legal_mass_id"), summary_analysis=_summary_of_analysis,
    doc="formal languages (Dyck-2, prefix expressions, toy English): grammaticality")
