"""In-context learning of representations (Park, Lee, Lubana et al. 2025): random walks on a
grid, ring, hexagonal or triangular lattice whose nodes wear fresh random tokens in every
sequence; accuracy, Dirichlet energy and PCA of the in-context class means against context
length.

Splits: id (walks on the context's own map, with a share `pretrain_frac` on the run's fixed
map), conflict. Metrics: eval_loss, oracle_loss, neighbour_acc (next-token probability on the
context graph's neighbours), prior_acc (on the fixed map's neighbours).
"""
from __future__ import annotations

from dataclasses import dataclass

from jaxsim.config import ConfigError, field
from jaxsim.testbed import Analysis, Derived, Objective, Testbed
from jaxsim.testbeds.graph_walk import task
from jaxsim.training import objectives

LABELS = {"task.pretrain_frac": "pretraining fraction", "task.vocab": "vocabulary",
          "task.context_length": "context length", "task.graph": "graph",
          "task.graph_size": "graph size"}

GRAPH = "analysis_graph.npz"   # written by `jaxsim analyze`: class means and PC1/PC2 at the final checkpoint


@dataclass(frozen=True)
class GraphWalkConfig:
    name: str = "graph_walk"
    graph: str = field("grid", choices=task.GRAPHS,
                       doc="square grid (4-neighbour, no wraparound), ring, hexagonal "
                           "(honeycomb) lattice drawn as a brick wall, or triangular lattice (the "
                           "grid plus the diagonal (i, j)-(i+1, j+1) of every cell; not "
                           "bipartite, like a ring of odd size: grid, hex and even rings are)")
    graph_size: int = field(4, min=2, doc="grid/hex/triangular side (size^2 nodes); ring: nodes")
    vocab: int = field(64, min=2, doc="token vocabulary (>= nodes); each sequence maps the nodes "
                       "injectively to random tokens")
    pretrain_frac: float = field(0.0, dynamic=True, min=0.0, max=1.0,
                                 doc="fraction of training sequences that use the run's one "
                                     "fixed node -> token map (a pretraining semantics)")
    context_length: int = field(64, min=2, doc="tokens per sequence")


def check_graph(cfg, where: str = "") -> None:
    """A drawable graph, enough tokens for an injective node map."""
    t = cfg.task
    if t.graph == "ring" and t.graph_size < 3:
        raise ConfigError(f"{where}task.graph_size must be >= 3 for task.graph=ring, got "
                          f"{t.graph_size}")
    nodes = t.graph_size if t.graph == "ring" else t.graph_size ** 2
    if t.vocab < nodes:
        raise ConfigError(f"{where}task.vocab ({t.vocab}) must be >= the graph's nodes ({nodes}: "
                          f"task.graph={t.graph}, task.graph_size={t.graph_size})")


def _evaluate(logits, batch) -> dict:
    """Next-token loss, oracle loss, neighbour mass under the context's graph and under the
    run's fixed ("pretraining") map, each averaged over all positions."""
    return {"eval_loss": objectives.lm_loss(logits, batch),
            "oracle_loss": objectives.oracle_loss(batch),
            "neighbour_acc": objectives.probability_mass(logits,
                                                        batch.next_probs_BxLxK[:, :-1]).mean(),
            "prior_acc": objectives.probability_mass(logits,
                                                     batch.prior_probs_BxLxK[:, :-1]).mean()}


def _analyze(request):
    from jaxsim.testbeds.graph_walk import analysis
    return analysis.analyze_graph(request.out, request.cfg, request.rows, request.num_sequences,
                                  request.context_lengths)


def _figures(request):
    from jaxsim.testbeds.graph_walk import figures
    return figures.draw(request.out, request.axes, request.rows, request.metrics)


OBJECTIVE = Objective(objectives.lm_inputs, objectives.lm_loss, _evaluate,
                      ("eval_loss", "oracle_loss", "neighbour_acc", "prior_acc"))

SUMMARY = ("eval_loss_id",
           Derived("gap_id", lambda m: m["eval_loss_id"] - m["oracle_loss_id"],
                   "held-out loss minus the true walk's (oracle) loss (nats)"),
           "neighbour_acc_id", "neighbour_acc_conflict", "prior_acc_conflict")


def _summary_of_analysis(doc) -> dict:
    """Per run, at the final checkpoint and the longest context: the neighbour mass
    (`accuracy_long`) and the last site's Dirichlet energy over a random embedding's
    (`energy_vs_random`: 1 = random, lower = the class means follow the graph)."""
    def ratio(run):
        energy, rand = run["energy"][-1][-1][-1], run["energy_random"][-1]
        return energy / rand if energy is not None and rand else None
    return {r["run_id"]: {"accuracy_long": r["accuracy"][-1][-1], "energy_vs_random": ratio(r)}
            for r in doc["runs"]}

TESTBED = Testbed(
    name="graph_walk", config=GraphWalkConfig, models=("gpt",), splits=task.SPLITS,
    constants=task.constants, train_batch=task.train_batch, eval_batch=task.eval_batch,
    vocab_size=task.vocab_size, seq_len=task.seq_len, sample=task.sample, objective=OBJECTIVE,
    rules=(check_graph,), analysis=Analysis(_analyze, options=("context_lengths",)),
    figures=_figures, labels=LABELS, unit="tokens",
    summary_metrics=SUMMARY, summary_analysis=_summary_of_analysis,
    # the metric's earlier spelling, still written for readers of older results
    metric_aliases={f"neighbor_acc_{s}": f"neighbour_acc_{s}" for s in task.SPLITS},
    per_example=lambda spec: spec.task.context_length,
    doc="in-context learning of representations: random walks on graphs")
