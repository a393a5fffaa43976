"""The contract between jaxsim's core and a testbed: the `Testbed` record every testbed exports.

The core (config, training, sweeps, results, the analysis and figure drivers) knows a testbed only
through these fields, the way optax knows an optimiser only through `GradientTransformation`.
A built-in testbed lives in `jaxsim/testbeds/<name>/` and is registered by one line in
`jaxsim/testbeds/__init__.py`; any other module on `PYTHONPATH` that defines a `Testbed` runs
with ``task.name: MODULE:OBJECT`` (see docs/writing-a-testbed.md).

Shapes in names: B batch, L sequence, V vocabulary, D dimension. Everything called inside a
compiled program (`constants`, `train_batch`, `eval_batch`, `sample`, the `Objective`, the SAE
hooks) must be pure and jittable; `spec` is the static `Spec` (hashable: `spec.task` is the
testbed's config dataclass with dynamic fields set to None), `hparams` the per-run dynamic values
as a pytree of traced scalars ({"task": {...}, "model": {...}, "train": {...}}).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

jax_array = Any    # jax.Array (this module does not import JAX)


class Objective(NamedTuple):
    """What a model (gpt, encoder, mlp, ...) is trained to do on the testbed's batches."""
    inputs: Callable        # batch -> tuple of positional model inputs
    loss: Callable          # (outputs, batch) -> scalar training loss
    evaluate: Callable      # (outputs, batch) -> {name: scalar}, names as in `eval_names`
    eval_names: Any         # metric names, or spec -> names (the loop appends _{split})
    # the loss's normaliser on a batch when it is not the number of examples (e.g. target
    # tokens): microbatches are weighted by it so their mean equals the whole batch's loss
    weight: Callable | None = None
    # True: `loss` and `evaluate` take a third argument, the frozen source model's outputs on
    # the same batch (a staged sweep's source run, `init.source`: DPO's reference model, a
    # distillation teacher); the testbed then needs init.source
    uses_source: bool = False


class SAEView(NamedTuple):
    """A sparse autoencoder as the SAE hooks see it: inputs and reconstructions in the data's
    own units (the input scale and, for BatchTopK, the inference threshold already applied)."""
    encode: Callable        # x_BxD -> codes z_BxF
    decode: Callable        # z_BxF -> x_hat_BxD
    params: dict            # the SAE's parameters (W_enc, W_dec, ...)


class SAEData(NamedTuple):
    """What a testbed gives a sparse autoencoder trained on its points.

    Batches carry `x_BxD` (float32 points) and `concept_B` (int32 ground-truth concept of each
    point, for the best-latent F1). Optional hooks add metrics and a training term.
    """
    input_dim: Callable                 # spec -> D
    num_concepts: Callable              # spec -> number of ground-truth concepts
    sample: Callable                    # (key, consts, spec, hparams, batch_size) -> Batch
    metric_names: Callable = lambda spec: ()   # spec -> extra evaluation metric names
    # (view: SAEView, consts, key, spec, hparams) -> {name: scalar} for `metric_names`
    evaluate: Callable | None = None
    # a causal training term (`model.causal_coef`): (consts, key, step, spec, hparams) ->
    # (x_BxD training points, ctx), and (view, consts, ctx, key, spec) -> scalar error
    causal_points: Callable | None = None
    causal_error: Callable | None = None


class Contrast(NamedTuple):
    """A behaviour's contrast set (`jaxsim steer`): prompts, each with a continuation that shows
    the behaviour and one that does not, as two token rows sharing the prompt (B prompts, T the
    model's input length; a causal model reads each row once)."""
    match_BxT: jax_array         # int32: prompt, then the matching continuation, then padding
    nonmatch_BxT: jax_array      # int32: the same prompt, then the non-matching continuation
    target_BxT: jax_array        # bool: positions of continuation tokens (both rows)
    valid_B: jax_array           # bool: the prompt has a contrast (others weigh nothing)


class Behaviour(NamedTuple):
    """A behaviour defined exactly by the task's ground truth, for steering (`jaxsim steer`).

    build         (key, consts, spec, hparams, num, continuation) -> Contrast of `num` prompts
                  whose continuations are `continuation` tokens long, drawn with `key` from the
                  run's own task (its constants and hyperparameters)
    doc           one line: what matching means
    continuation  the default continuation length (tokens)
    check         (spec, continuation) -> None, or one line saying why the behaviour is not
                  defined for that shape group (e.g. another grammar, a too-short context)
    """
    build: Callable
    doc: str
    continuation: int = 8
    check: Callable = lambda spec, continuation: None


class Derived(NamedTuple):
    """A summary column computed from other metrics of the same runs, e.g. the loss minus the
    oracle's: the number a reader compares across axis values, which no single metric holds."""
    name: str
    of: Callable        # {metric name: values [R] (numpy)} -> values [R]
    doc: str = ""


class AnalysisRequest(NamedTuple):
    """What `jaxsim analyze` passes a testbed's analysis."""
    out: Path                        # the results directory
    cfg: Any                         # its Config
    rows: list                       # runs.csv rows (dicts of strings)
    num_sequences: int               # --sequences: analysis examples per run
    context_lengths: list | None     # --context-lengths (only if the analysis takes them)


class Analysis(NamedTuple):
    """A testbed's `jaxsim analyze`: `run(request) -> the analysis.json document` (a dict of
    JSON values; it may write its own DIR/analysis_*.npz files too). `options` names the CLI
    options it takes beyond --sequences (e.g. "context_lengths")."""
    run: Callable[[AnalysisRequest], dict]
    options: tuple = ()


class FigureRequest(NamedTuple):
    """What `jaxsim plot` passes a testbed's figures: only what is on disk."""
    out: Path                        # the results directory (figures go to out/figures)
    cfg: Any                         # its Config
    axes: list                       # the swept keys that vary, leading axis first
    rows: list                       # runs.csv rows
    metrics: dict                    # metrics.npz arrays (diverged runs NaN)
    options: dict                    # figure options from the CLI (e.g. {"num_chains": 32})


@dataclass(frozen=True)
class Testbed:
    """One testbed: its config, data, objective, rules, analysis and figures.

    name         the registry name (`task.name`)
    config       the frozen dataclass of its `task` section: a `name: str` field first, then
                 fields declared with `jaxsim.config.field` (static or dynamic, range, doc)
    models       the `model.name` values it trains; the first is the default pairing
    splits       held-out evaluation splits (metric names end in _{split})
    constants    (run_key, spec, hparams) -> per-run constants pytree (chains, factors, ...)
    train_batch  (consts, run_key, step, spec, hparams) -> the Batch of training step `step`
    eval_batch   (consts, run_key, spec, hparams, split) -> the fixed held-out Batch of `split`
    vocab_size   spec -> the model's vocabulary (or input dimension, for continuous inputs)
    seq_len      spec -> the longest sequence the model reads (positions)
    objective    how a non-SAE model trains on it (None: only SAEs train on it)
    sae          what an SAE trained on its points needs (None: no SAE trains on it)
    rules        cross-field checks: each (cfg, where) -> None, raising ConfigError
    analysis     its `jaxsim analyze` (None: nothing to analyse)
    figures      FigureRequest -> list of written paths (reads files only)
    labels       readable names of its task keys for figure axes ({"task.x": "..."})
    unit         what the throughput counts ("tokens", "points", "entries")
    per_example  spec -> units per training example (tokens per sequence, ...)
    metric_aliases  extra metrics.npz names: {alias: existing name}
    sample       (key, consts, spec, hparams, batch_size, split) -> Batch: needed for the
                 testbed to be an activations source (sequences as `tokens_BxL`)
    features     spec -> ((name, number of values), ...) of `features_BxLxF` in its batches
    points_per_sequence  spec -> activations points an SAE takes per source sequence
    behaviours   {name: Behaviour}: behaviours `jaxsim steer` can promote and suppress in a
                 gpt trained on it
    stage        what a staged run (`init.source`, `jaxsim.stages`) does with its source run:
                 "init" (its parameters start as the source's; the architecture must match)
                 or "frozen" (the source is a frozen model the testbed reads through
                 hparams["source"], e.g. SAEs on its activations; the run's own model starts
                 fresh)
    summary_metrics  what the summaries show (the table at the end of a sweep, summary.csv,
                 `jaxsim summary`, the per-evaluation log line): metric names of metrics.npz
                 and `Derived` columns, in order; a name a sweep lacks is skipped; () = every
                 metric (no aliases). A testbed names the few numbers its finding is read from
    summary_analysis  analysis.json -> {run_id: {column: number or str}}: each run's final
                 analysis results, which `jaxsim analyze` adds to the summary (None: none)
    doc          one line for `jaxsim keys`
    """
    name: str
    config: type
    models: tuple
    splits: tuple
    constants: Callable
    train_batch: Callable
    eval_batch: Callable
    vocab_size: Callable
    seq_len: Callable
    objective: Objective | None = None
    sae: SAEData | None = None
    rules: tuple = ()
    analysis: Analysis | None = None
    figures: Callable | None = None
    labels: dict = field(default_factory=dict)
    unit: str = "tokens"
    per_example: Callable = lambda spec: 1
    metric_aliases: dict = field(default_factory=dict)
    sample: Callable | None = None
    features: Callable | None = None
    points_per_sequence: Callable | None = None
    behaviours: dict = field(default_factory=dict)
    stage: str = "init"
    summary_metrics: tuple = ()
    summary_analysis: Callable | None = None
    doc: str = ""

    def metric_names(self, spec) -> list[str]:
        """The per-evaluation metric names of a non-SAE model on this testbed."""
        names = self.objective.eval_names
        names = names(spec) if callable(names) else names
        return ["train_loss"] + [f"{kind}_{s}" for s in self.splits for kind in names]
