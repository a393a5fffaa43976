"""A structured knowledge graph (Nishi, Okawa, Ramesh, Khona, Tanaka, Lubana, "Representation
Shattering in Transformers: A Synthetic Study with Knowledge Editing", ICML 2025): N entities on
C random cyclic orders, relations = k-th successor / predecessor on a cycle (k = 1..h), a GPT
trained on walks that chain facts, with held-out facts that test logical (inverse) and
compositional (2-hop) inference.

Splits: direct (trained facts in a fresh context), logical, compositional (`facts.py` defines the
held-out design). Metrics per split: loss and accuracy of the answer (loss_direct,
accuracy_logical, ...). The public fact API the editing code uses is `facts.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

from jaxsim.config import ConfigError, field
from jaxsim.testbed import Analysis, Objective, Testbed
from jaxsim.testbeds.knowledge_graph import task
from jaxsim.training import objectives

LABELS = {"task.num_entities": "entities", "task.num_cycles": "cycles", "task.max_hop": "max hop",
          "task.logical_frac": "logical held-out share",
          "task.compositional_frac": "compositional held-out share"}

REPRESENTATIONS = "analysis_representations.npz"   # written by `jaxsim analyze`


@dataclass(frozen=True)
class KnowledgeGraphConfig:
    name: str = "knowledge_graph"
    num_entities: int = field(64, min=4, doc="N: entities (tokens 0..N-1), on every cycle")
    num_cycles: int = field(3, min=1, doc="C: cyclic orders, each a random permutation of the "
                                          "entities drawn from the run's key")
    max_hop: int = field(2, min=1, doc="h: relations are the k-th successor and predecessor on "
                                       "each cycle, k = 1..h (R = 2 C h relation tokens); "
                                       "h < N / 2")
    walk_length: int = field(8, min=2, doc="facts per training walk (2 walk_length + 1 tokens); "
                                           "evaluation asks each fact after walk_length - 1 "
                                           "context facts")
    logical_frac: float = field(0.2, dynamic=True, min=0.0, max=1.0,
                                doc="share of inverse pairs (e, +k) / (e+k, -k) with one fact "
                                    "held out (the logical split); the other stays trained")
    compositional_frac: float = field(0.2, dynamic=True, min=0.0, max=1.0,
                                      doc="share of hop-2 pairs held out in both directions "
                                          "(the compositional split), their hop-1 chains "
                                          "trained; needs max_hop >= 2")


def check_graph(cfg, where: str = "") -> None:
    """Distinct successor and predecessor facts (h < N / 2); compositional facts need hop 2."""
    t = cfg.task
    if 2 * t.max_hop >= t.num_entities:
        raise ConfigError(f"{where}task.max_hop ({t.max_hop}) must be < task.num_entities / 2 "
                          f"({t.num_entities} / 2): the k-th successor and predecessor differ")
    if t.compositional_frac > 0 and t.max_hop < 2:
        raise ConfigError(f"{where}task.compositional_frac ({t.compositional_frac}) must be 0 "
                          f"when task.max_hop < 2 (compositional facts are hop-2 facts)")


def _analyze(request):
    from jaxsim.testbeds.knowledge_graph import analysis
    return analysis.analyze(request)


def _figures(request):
    from jaxsim.testbeds.knowledge_graph import figures
    return figures.draw(request)


def _summary_of_analysis(doc) -> dict:
    """Per run, at the final checkpoint: exact accuracy over every fact of each kind."""
    return {r["run_id"]: {f"exact_{k}": r["accuracy"][k][-1] for k in task.SPLITS}
            for r in doc["runs"]}


OBJECTIVE = Objective(objectives.lm_inputs, task.loss, task.evaluate, ("loss", "accuracy"),
                      weight=task.weight)

TESTBED = Testbed(
    name="knowledge_graph", config=KnowledgeGraphConfig, models=("gpt",), splits=task.SPLITS,
    constants=task.facts.constants, train_batch=task.train_batch, eval_batch=task.eval_batch,
    vocab_size=task.vocab_size, seq_len=task.seq_len, sample=task.sample, objective=OBJECTIVE,
    rules=(check_graph,), analysis=Analysis(_analyze), figures=_figures, labels=LABELS,
    unit="tokens", per_example=task.seq_len,
    summary_metrics=tuple(f"accuracy_{s}" for s in task.SPLITS),
    summary_analysis=_summary_of_analysis,
    doc="knowledge graph on random cycles: direct, logical and compositional facts")
