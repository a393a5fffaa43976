"""Structured identity mapping (swing-by dynamics, concept learning order): an MLP or the
symmetric U U^T model learns the identity on s Gaussian clusters along the first coordinates of
R^d; which concept is learned first, swing-by of the out-of-distribution composition, and the
one-layer closed form.

Split: id. Metrics: eval_loss, ood_loss (the all-concepts composition), ood_off, ood_coordP,
centre_coordP, comp_loss_<bits> for each of the 2^s compositions.
"""
from __future__ import annotations

from dataclasses import dataclass

from jaxsim.config import ConfigError, field
from jaxsim.testbed import Analysis, Testbed
from jaxsim.testbeds.sim import task
from jaxsim.testbeds.sim.objective import OBJECTIVE

MAX_CONCEPTS = 6
LABELS = {"task.concept_mean": "μ₁ (concept mean)", "task.concept_noise": "σ (concept noise)",
          "task.dim": "d"}


@dataclass(frozen=True)
class SIMConfig:
    name: str = "sim"
    dim: int = field(64, min=2, doc="d, the ambient dimension")
    num_concepts: int = field(2, min=1, doc="s, Gaussian clusters (at most 6)")
    concept_mean: float = field(1.0, dynamic=True,
                                doc="mu_1, the first cluster's mean along e_1; mu_p = "
                                    "concept_mean + (p - 1) concept_mean_step (all must be > 0)")
    concept_mean_step: float = field(1.0, dynamic=True, doc="mu_{p+1} - mu_p")
    concept_noise: float = field(0.05, dynamic=True, min=0.0,
                                 doc="sigma_1, noise std of concept coordinate 1; sigma_p = "
                                     "concept_noise + (p - 1) concept_noise_step (all >= 0)")
    concept_noise_step: float = field(0.0, dynamic=True, doc="sigma_{p+1} - sigma_p")
    rotate: bool = field(False, doc="apply one random orthogonal matrix per run (Householder "
                         "product from its key) to every training and test point")


def _check_sim(cfg, where: str) -> None:
    """A deep enough relu mlp; s <= min(d, 6); every mu_p > 0 and sigma_p >= 0."""
    task_, m = cfg.task, cfg.model
    if m.name == "mlp" and m.activation == "relu" and m.num_layers == 1:
        raise ConfigError(f"{where}model.activation=relu needs model.num_layers >= 2 (a one-layer "
                          f"mlp is linear)")
    if not 1 <= task_.num_concepts <= min(task_.dim, MAX_CONCEPTS):
        raise ConfigError(f"{where}task.num_concepts ({task_.num_concepts}) must be between 1 and "
                          f"min(task.dim, {MAX_CONCEPTS}) = "
                          f"{min(task_.dim, MAX_CONCEPTS)} for task.name=sim")
    last = task_.num_concepts - 1
    if min(task_.concept_mean, task_.concept_mean + last * task_.concept_mean_step) <= 0:
        raise ConfigError(f"{where}task.concept_mean + (p - 1) task.concept_mean_step must be > 0 "
                          f"for p = 1..{task_.num_concepts}; got concept_mean="
                          f"{task_.concept_mean}, concept_mean_step={task_.concept_mean_step}")
    if task_.concept_noise + last * task_.concept_noise_step < 0:
        raise ConfigError(f"{where}task.concept_noise + (p - 1) task.concept_noise_step must be "
                          f">= 0 for p = 1..{task_.num_concepts}; got concept_noise="
                          f"{task_.concept_noise}, concept_noise_step={task_.concept_noise_step}")


def _analyze(request):
    from jaxsim.testbeds.sim import analysis
    return analysis.analyze(request.out, request.cfg, request.rows, request.num_sequences)


def _figures(request):
    from jaxsim import results
    from jaxsim.testbeds.sim import figures
    runs, groups = results.read_plan(request.out)
    sizes = {r.run_id: g.spec.task.num_concepts for g in groups for r in g.runs}
    concepts = {r.run_id: task.means_noises(r.hparams["task"], sizes[r.run_id]) for r in runs}
    return figures.draw(request.out, request.axes, request.rows, request.metrics, concepts)


def _summary_of_analysis(doc) -> dict:
    """Per run: whether its OOD loss is non-monotonic (the swing-by), its rise over the
    minimum (units of ½‖x̂‖²), and whether the concepts were learned in order of signal."""
    found = {}
    for r in doc["runs"]:
        if r.get("ood") is None:          # a diverged run
            continue
        found[r["run_id"]] = {
            "ood_swing_by": "non-monotonic" if r["ood"]["nonmonotonic"] else "monotonic",
            "ood_rise": r["ood"]["rise_rel"],
            "order_matches_signal": {True: "yes", False: "no"}.get(r.get("order_matches_signal"))}
    return found


TESTBED = Testbed(
    name="sim", config=SIMConfig, models=("mlp", "symmetric"), splits=task.SPLITS,
    constants=task.constants, train_batch=task.train_batch, eval_batch=task.eval_batch,
    vocab_size=task.vocab_size, seq_len=task.seq_len, objective=OBJECTIVE, rules=(_check_sim,),
    analysis=Analysis(_analyze), figures=_figures, labels=LABELS, unit="points",
    summary_metrics=("eval_loss_id", "ood_loss_id"), summary_analysis=_summary_of_analysis,
    doc="structured identity mapping: concept learning order and swing-by")
