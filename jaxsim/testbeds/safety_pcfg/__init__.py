"""Safety fine-tuning on a synthetic task-and-concept language (Jain, Lubana, Oksuz, Joy, Torr,
Sanyal, Dokania, "What Makes and Breaks Safety Fine-tuning? A Mechanistic Study", NeurIPS 2024).

Two registered testbeds share this package, its data and its keys:
- `safety_pcfg` (`task.objective: pretrain | ssft`): pretraining of a small GPT on the mixture of
  PCFG text and operator outputs; SSFT also runs here (it needs no reference model).
- `safety_pcfg_finetune` (`task.objective: ssft | dpo | unlearn`): the three safety fine-tuning
  methods, staged on a pretraining sweep (`init.source`); its objective reads the frozen source
  model (`Objective(uses_source=True)`: DPO's reference), so the three methods share one sweep.

Splits: safe, unsafe, jb_duplicate, jb_ood, jb_competing (`task.py`). Metrics per split:
loss (the objective's), accuracy (the whole output right, teacher-forced) and refusal (y2
predicted as the refusal token at every position, teacher-forced).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax

from jaxsim.config import ConfigError, field
from jaxsim.testbed import Analysis, Objective, Testbed
from jaxsim.testbeds.safety_pcfg import grammars, objectives, task

LABELS = {"task.objective": "method", "train.lr": "learning rate",
          "task.p_unsafe": "share of unsafe fine-tuning inputs"}


@dataclass(frozen=True)
class SafetyPCFGConfig:
    name: str = "safety_pcfg"
    objective: str = field("pretrain", choices=("pretrain", "ssft"),
                           doc="what the model is trained on: pretrain (the PCFG/operator "
                               "mixture) or ssft; dpo and unlearn read a reference model: "
                               "task.name=safety_pcfg_finetune")
    num_pcfgs: int = field(4, min=1, max=grammars.NUM_PCFGS,
                           doc="PCFGs the operands are drawn from (uniformly): the official 4 "
                               "share the nonterminal tree and differ in their leaves")
    min_operand_length: int = field(25, min=1, max=35,
                                    doc="shortest operand window (letters); official 25")
    max_operand_length: int = field(35, min=1, max=35,
                                    doc="longest operand window (letters; official 35); "
                                        "sequences are 3 x this + 10 tokens")
    bijection_seed: int = field(grammars.START_RANDOM, min=0,
                                doc="the operators' bijections: identity and RandomState(seed + "
                                    "i).permutation(30), i = 0..8 (official run.sh: 0)")
    mix_pcfg: float = field(0.1, dynamic=True, min=0.0,
                            doc="pretraining: weight of the operand-text target mode")
    mix_full: float = field(0.2, dynamic=True, min=0.0,
                            doc="pretraining: weight of the whole-sequence target mode")
    mix_comp1: float = field(0.3, dynamic=True, min=0.0,
                             doc="pretraining: weight of the y2 (first two operators) mode")
    mix_comp2: float = field(0.4, dynamic=True, min=0.0,
                             doc="pretraining: weight of the y4 (all four operators) mode")
    p_unsafe: float = field(0.2, dynamic=True, min=0.0, max=1.0,
                            doc="fine-tuning: share of unsafe inputs (refusal preferred) in a "
                                "training batch; the rest are safe inputs (comply)")
    beta_safe: float = field(0.1, dynamic=True, min=0.0,
                             doc="dpo: beta of the preferred completion's term (official 0.1)")
    beta_unsafe: float = field(0.01, dynamic=True, min=0.0,
                               doc="dpo: beta of the dispreferred completion's term "
                                   "(official 0.01)")
    weight_safe: float = field(1.0, dynamic=True, min=0.0,
                               doc="unlearn: weight of the preferred completion's NLL "
                                   "(official 1.0)")
    weight_unsafe: float = field(0.1, dynamic=True, min=0.0,
                                 doc="unlearn: weight of the dispreferred completion's NLL, "
                                     "subtracted (official 0.1)")


@dataclass(frozen=True)
class SafetyFinetuneConfig(SafetyPCFGConfig):
    name: str = "safety_pcfg_finetune"
    objective: str = field("ssft", choices=("ssft", "dpo", "unlearn"),
                           doc="the safety fine-tuning method: ssft, dpo or unlearn "
                               "(pretrain: use task.name=safety_pcfg)")


def _check(cfg, where: str) -> None:
    t = cfg.task
    if t.min_operand_length > t.max_operand_length:
        raise ConfigError(f"{where}task.min_operand_length ({t.min_operand_length}) must be "
                          f"<= task.max_operand_length ({t.max_operand_length})")
    if t.mix_pcfg + t.mix_full + t.mix_comp1 + t.mix_comp2 <= 0:
        raise ConfigError(f"{where}task.mix_pcfg + mix_full + mix_comp1 + mix_comp2 must be "
                          f"> 0 (the pretraining target modes' weights)")


class Sequences(NamedTuple):
    tokens_BxL: jax.Array


def _sample(key, consts, spec, hparams, batch_size: int, split: str = "safe") -> Sequences:
    """Compliant sequences of a split (for activation readers)."""
    return Sequences(task.sample_tokens(key, consts, spec, hparams, batch_size, split))


SUMMARY = ("accuracy_safe", "refusal_safe", "accuracy_unsafe", "refusal_unsafe",
           "refusal_jb_duplicate", "refusal_jb_ood", "refusal_jb_competing")


def _figures(request):
    from jaxsim.testbeds.safety_pcfg import figures, mechanism_figures
    return (figures.draw(request.out, request.axes, request.rows, request.metrics)
            + mechanism_figures.draw(request.out))


def _analyze(request):
    from jaxsim.testbeds.safety_pcfg import analysis
    return analysis.analyze(request.out, request.cfg, request.rows, request.num_sequences)


def _summary_of_analysis(doc) -> dict:
    from jaxsim.testbeds.safety_pcfg import analysis
    return analysis.summary(doc)


def _testbed(name: str, config: type, uses_source: bool, doc: str) -> Testbed:
    objective = Objective(objectives.inputs,
                          objectives.loss if uses_source else
                          (lambda logits, batch: objectives.loss(logits, batch)),
                          objectives.evaluate if uses_source else
                          (lambda logits, batch: objectives.evaluate(logits, batch)),
                          objectives.EVAL_NAMES, objectives.weight, uses_source=uses_source)
    return Testbed(
        name=name, config=config, models=("gpt",), splits=task.SPLITS,
        constants=task.constants, train_batch=task.train_batch, eval_batch=task.eval_batch,
        vocab_size=task.vocab_size, seq_len=task.seq_len, objective=objective,
        rules=(_check,), figures=_figures, labels=LABELS, unit="tokens",
        per_example=task.seq_len, sample=_sample, summary_metrics=SUMMARY, doc=doc,
        analysis=Analysis(_analyze) if uses_source else None,
        summary_analysis=_summary_of_analysis if uses_source else None)


TESTBED = _testbed("safety_pcfg", SafetyPCFGConfig, False,
                   "safety fine-tuning testbed: pretraining on PCFG operands and operators")
FINETUNE = _testbed("safety_pcfg_finetune", SafetyFinetuneConfig, True,
                    "safety fine-tuning (ssft, dpo, unlearn) against the frozen pretrained model")
