"""In-context learning on a finite mixture of Markov chains (Park, Lubana, Pres, Tanaka 2024):
a small GPT trained on sequences from N training chains, compared with four algorithms
(unigram/bigram statistics x retrieval of a training chain vs Bayesian inference of a new one).

Splits: id (the run's training chains), ood (fresh Dirichlet chains, one per sequence).
Metrics: eval_loss and oracle_loss (the true chain's cross-entropy on the same targets) per split.
"""
from __future__ import annotations

from dataclasses import dataclass

from jaxsim.config import field
from jaxsim.testbed import Analysis, Derived, Objective, Testbed
from jaxsim.testbeds.markov_mixture import behaviours, task
from jaxsim.training import objectives

LABELS = {"task.num_chains": "task diversity N (chains)",
          "task.context_length": "context length", "task.alpha": "Dirichlet α"}


@dataclass(frozen=True)
class MarkovMixtureConfig:
    name: str = "markov_mixture"
    num_states: int = field(10, min=2, doc="k, states of each Markov chain")
    alpha: float = field(1.0, dynamic=True, min=0.0, min_exclusive=True,
                         doc="Dirichlet concentration of each transition row")
    num_chains: int = field(64, dynamic="max", min=1, doc="N, chains in the training mixture")
    weights: str = field("uniform", choices=("uniform", "random"), doc="mixture weights")
    context_length: int = field(64, min=2, doc="tokens per sequence")


def _evaluate(logits, batch) -> dict:
    return {"eval_loss": objectives.lm_loss(logits, batch),
            "oracle_loss": objectives.oracle_loss(batch)}


def _analyze(request):
    from jaxsim.testbeds.markov_mixture import analysis
    return analysis.analyze_icl(request)


def _summary_of_analysis(doc):
    from jaxsim.testbeds.markov_mixture import verdicts
    return verdicts.summary_of_analysis(doc)


# the README's finding: the gap to the oracle on training chains and on fresh ones, against N
SUMMARY = ("eval_loss_id", "eval_loss_ood",
           Derived("gap_id", lambda m: m["eval_loss_id"] - m["oracle_loss_id"],
                   "held-out loss minus the true chains' (oracle) loss, training chains (nats)"),
           Derived("gap_ood", lambda m: m["eval_loss_ood"] - m["oracle_loss_ood"],
                   "the same on fresh chains (nats)"))


def _figures(request):
    from jaxsim.testbeds.markov_mixture import figures
    return figures.draw(request)


TESTBED = Testbed(
    name="markov_mixture", config=MarkovMixtureConfig, models=("gpt",), splits=task.SPLITS,
    constants=task.constants, train_batch=task.train_batch, eval_batch=task.eval_batch,
    vocab_size=task.vocab_size, seq_len=task.seq_len, sample=task.sample,
    objective=Objective(objectives.lm_inputs, objectives.lm_loss, _evaluate,
                        ("eval_loss", "oracle_loss")),
    analysis=Analysis(_analyze, options=("context_lengths",)), figures=_figures,
    labels=LABELS,
    unit="tokens", per_example=lambda spec: spec.task.context_length,
    metric_aliases={"oracle_loss": "oracle_loss_ood"}, behaviours=behaviours.BEHAVIOURS,
    summary_metrics=SUMMARY, summary_analysis=_summary_of_analysis,
    doc="in-context learning on a mixture of Markov chains; four-algorithm analysis")
