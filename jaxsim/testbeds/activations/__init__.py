"""Sparse autoencoders on our own trained transformers: the residual stream of a saved jaxsim
gpt sweep (a staged sweep: `init.source`, `init.run`, `init.step`) at a site, streamed from fresh sequences of the source run's own task,
with that task's ground-truth features; causal probes and the causal training term of Menon et
al. (splice the SAE into the source model).

Split: id. Metrics: the SAE metrics, plus clean_loss, spliced_loss, zero_ablation_loss,
loss_recovered (the source task's loss with the SAE spliced in) and interp_error (the causal
term's interpolation-consistency error).
"""
from __future__ import annotations

from dataclasses import dataclass

import jax

from jaxsim.config import ConfigError, field
from jaxsim.testbed import Analysis, SAEData, Testbed
from jaxsim.testbeds import concept_geometry
from jaxsim.testbeds.activations import causal, source

SPLICE_METRICS = ("clean_loss", "spliced_loss", "zero_ablation_loss", "loss_recovered",
                  "interp_error")
SPLICE_SEQUENCES = 32
CAUSAL_STREAM = 3000  # the run key's sub-stream of the causal term's interpolation weights


@dataclass(frozen=True)
class ActivationsConfig:
    name: str = "activations"
    site: str = field("block0", doc="residual-stream site of the source model (init.source, "
                      "init.run, init.step): embed, block0, block1, ...")
    dim: int = field(64, min=2, doc="D, the source model's d_model (checked against it)")


def _check_source(cfg, where: str) -> None:
    """The activations come from a trained source sweep (a staged sweep)."""
    if not cfg.init.source:
        raise ConfigError(f"{where}task.name=activations needs init.source (a results directory "
                          f"of a trained gpt sweep; init.run picks its run)")


def _splice(consts, spec):
    return lambda inputs, x: source.splice_logits(consts, spec, inputs, x)


def _evaluate(view, consts, key, spec, hparams) -> dict:
    """The source's loss with the SAE spliced in, and the causal term's error with inference
    codes, on fixed sequences."""
    def reconstruct(x_BxTxD):
        flat = x_BxTxD.reshape(-1, x_BxTxD.shape[-1])
        return view.decode(view.encode(flat)).reshape(x_BxTxD.shape)

    values = source.splice_losses(reconstruct, consts, key, spec, SPLICE_SEQUENCES)
    ctx = source.context(jax.random.fold_in(key, source.EVAL_ID), consts, spec, SPLICE_SEQUENCES)
    values["interp_error"] = causal.interpolation_error(
        view.encode, view.decode, _splice(consts, spec), ctx, jax.random.fold_in(key, CAUSAL_STREAM))
    return values


def _causal_points(consts, key, step, spec, hparams):
    """The sequences behind step `step`'s training points, and those points."""
    ctx = source.train_context(consts, key, step, spec)
    return source.points(ctx, spec.train.batch_size).x_BxD, ctx


def _causal_error(view, consts, ctx, key, spec):
    return causal.interpolation_error(view.encode, view.decode, _splice(consts, spec), ctx, key)


def _figures(request):
    from jaxsim.testbeds.activations import figures
    return concept_geometry.draw_figures(request) + figures.draw(request.out, request.axes)


TESTBED = Testbed(
    name="activations", config=ActivationsConfig, models=("sae",), splits=source.SPLITS,
    constants=source.constants, train_batch=source.train_batch, eval_batch=source.eval_batch,
    vocab_size=lambda spec: spec.task.dim, seq_len=lambda spec: 1,
    sae=SAEData(input_dim=lambda spec: spec.task.dim, num_concepts=source.num_concepts,
                sample=source.sample, metric_names=lambda spec: SPLICE_METRICS,
                evaluate=_evaluate, causal_points=_causal_points, causal_error=_causal_error),
    rules=(_check_source,), analysis=Analysis(concept_geometry.analyze), figures=_figures,
    labels={"task.site": "site", "init.run": "source run"}, unit="points", stage="frozen",
    summary_metrics=concept_geometry.SUMMARY,
    summary_analysis=concept_geometry.summary_of_analysis,
    doc="sparse autoencoders on a trained jaxsim transformer's residual stream; causal probes")
