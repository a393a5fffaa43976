"""Sparse autoencoders on toy data with known concepts (Hindupur, Lubana, Fel, Ba 2025): Gaussian
clusters on affine subspaces of mixed intrinsic dimension, or nonlinearly separable arcs (moons,
circles); ReLU/L1, TopK, BatchTopK, JumpReLU and SpaDE SAEs and what each recovers.

Split: id. Metrics: the SAE metrics (mse, fvu, l0, dead_fraction, dense_fraction, f1) and, on
subspaces, max_cos (mean max |cos| of decoder atoms to the true directions).
"""
from __future__ import annotations

from dataclasses import dataclass

from jaxsim.config import field
from jaxsim.testbed import Analysis, SAEData, Testbed
from jaxsim.testbeds.concept_geometry import task
from jaxsim.training import sae_metrics

LABELS = {"task.geometry": "geometry", "task.dim": "D", "task.num_concepts": "concepts",
          "task.noise_std": "noise std"}

FIELDS = "analysis_fields.npz"   # written by `jaxsim analyze`: receptive fields of 2-D runs at the final checkpoint


@dataclass(frozen=True)
class ConceptGeometryConfig:
    name: str = "concept_geometry"
    geometry: str = field("subspaces", choices=("subspaces", "moons", "circles"),
                          doc="Gaussian clusters on subspaces of mixed intrinsic dimension, or "
                              "nonlinearly separable 1-D arcs")
    dim: int = field(64, min=2, doc="D, the ambient dimension")
    num_concepts: int = field(8, min=1, doc="C, concepts (moons: always 2)")
    max_concept_dim: int = field(8, min=1, doc="subspaces: intrinsic dimensions 1, 2, 4, ... up "
                                 "to this, in equal shares")
    noise_std: float = field(0.0, dynamic=True, min=0.0, doc="ambient noise std")
    concept_offset: float = field(4.0, dynamic=True, min=0.0,
                                  doc="subspaces: norm of each cluster's centre (0 = subspaces "
                                      "through the origin)")


def _subspaces(spec) -> bool:
    return spec.task.geometry == "subspaces"


def _evaluate(view, consts, key, spec, hparams) -> dict:
    """Subspaces: mean max |cos| of the decoder atoms to the true directions."""
    if not _subspaces(spec):
        return {}
    dirs, valid = task.true_directions(consts)
    return {"max_cos": sae_metrics.mean_max_cosine(view.params["W_dec"], dirs, valid)}


def analyze(request):
    from jaxsim.testbeds.concept_geometry import analysis
    return analysis.analyze_concepts(request.out, request.cfg, request.rows,
                                     request.num_sequences)


# the sparsity-fidelity trade-off and concept recovery at the end of training
SUMMARY = ("fvu_id", "l0_id", "f1_id", "dead_fraction_id", "max_cos_id", "loss_recovered_id")


def summary_of_analysis(doc) -> dict:
    """Per run, at the final checkpoint: the MCC of its latents with the true concepts."""
    return {r["run_id"]: {"mcc_concepts": r["mcc_concepts"][-1]} for r in doc["runs"]
            if r.get("mcc_concepts")}


def draw_figures(request):
    from jaxsim.testbeds.concept_geometry import figures as sae_figures
    return sae_figures.draw(request.out, request.axes, request.rows, request.metrics,
                            getattr(request.cfg.task, "geometry", "subspaces"))


TESTBED = Testbed(
    name="concept_geometry", config=ConceptGeometryConfig, models=("sae",), splits=task.SPLITS,
    constants=task.constants, train_batch=task.train_batch, eval_batch=task.eval_batch,
    vocab_size=lambda spec: spec.task.dim, seq_len=lambda spec: 1,
    sae=SAEData(input_dim=lambda spec: spec.task.dim, num_concepts=task.num_concepts,
                sample=task.sample,
                metric_names=lambda spec: ("max_cos",) if _subspaces(spec) else (),
                evaluate=_evaluate),
    analysis=Analysis(analyze), figures=draw_figures, labels=LABELS, unit="points",
    summary_metrics=SUMMARY, summary_analysis=summary_of_analysis,
    doc="sparse autoencoders on toy data with known concepts")
