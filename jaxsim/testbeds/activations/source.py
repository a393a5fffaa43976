"""SAE training data from a saved jaxsim sweep: the residual stream of a trained transformer.

A staged sweep (`jaxsim.stages`, testbed stage "frozen"): `init.source` (a results directory),
`init.run` (the source run, a dynamic value: one compile covers every source seed of a source
shape group), `init.step` (-1 = the last saved) and `task.site` ("embed", "block0", ...). The
source run reaches the program as the run's frozen `hparams["source"]` (its parameters, its own
hyperparameters and seed); its static spec is `spec.source`. Streamed: each batch draws fresh
sequences from the source run's own task (its chains, its hparams, a stream of the SAE run's
key), runs the frozen source model and keeps the first `batch_size` positions' activations at
the site. Every point carries the token at its position (`concept_B`: the source's state, a
known feature), the position (`coords_BxM`) and the source task's ground-truth features at that
position (`features_BxK`, names from `feature_names`): the task's own ``features_BxLxF`` when
its batch has them (e.g. bracket depth), else the token. `context` gives whole sequences with
their clean logits, and `splice_logits` runs the source model with the site replaced (for the
causal probes and the causal training term).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsim import testbeds
from jaxsim.testbeds import streams as streams
from jaxsim.config import ConfigError, Spec
from jaxsim.training.loop import model_of

SPLITS = ("id",)
TRAIN_STREAM, EVAL_ID = 1, 2


class Batch(NamedTuple):
    x_BxD: jax.Array        # float32 activations at the site
    concept_B: jax.Array    # int32 token at the point's position
    coords_BxM: jax.Array   # float32 position (M = 1)
    features_BxK: jax.Array  # int32 ground-truth features at the point (`feature_names`)


class Context(NamedTuple):
    """Whole source sequences with the clean model's view of them (T = context_length - 1)."""
    seqs: NamedTuple         # the source task's own batch (its ground truth, e.g. chain_B)
    inputs_BxT: jax.Array    # int32 tokens the model reads
    acts_BxTxD: jax.Array    # clean activations at the site
    logits_BxTxV: jax.Array  # clean next-token logits
    features_BxTxK: jax.Array  # int32 ground-truth features per position


def source_of(spec: Spec) -> Spec:
    """The source run's static spec (its shape group's), checked against the task section."""
    src = spec.source
    if src is None:
        raise ConfigError("task.name=activations needs init.source (a results directory of a "
                          "trained gpt sweep) and init.run (the source run)")
    if src.model.name != "gpt":
        raise ConfigError(f"init.source must hold a gpt sweep, {spec.init.source} has "
                          f"model.name={src.model.name!r}")
    sites = ["embed"] + [f"block{i}" for i in range(src.model.num_layers)]
    if spec.task.site not in sites:
        raise ConfigError(f"task.site {spec.task.site!r} is not a site of the source model; "
                          f"allowed: {', '.join(sites)}")
    if spec.task.dim != src.model.d_model:
        raise ConfigError(f"task.dim ({spec.task.dim}) must equal the source model's d_model "
                          f"({src.model.d_model})")
    return src


class Constants(NamedTuple):
    params: dict          # the source model's params (the run's frozen hparams["source"])
    task: tuple           # the source task's constants (e.g. its chain bank)
    hparams: dict         # the source run's own dynamic hyperparameters


def constants(run_key: jax.Array, spec: Spec, hparams: dict) -> Constants:
    src, frozen = source_of(spec), hparams["source"]
    task = testbeds.get(src.task.name)
    consts = task.constants(jax.random.key(frozen["seed"]), src, frozen["hparams"])
    return Constants(frozen["params"], consts, frozen["hparams"])


def sequences(key: jax.Array, consts: Constants, spec: Spec, num: int):
    """`num` fresh sequences of the source run's task (its training distribution)."""
    src = source_of(spec)
    return testbeds.get(src.task.name).sample(key, consts.task, src, consts.hparams, num, "id")


def feature_names(spec: Spec) -> list[str]:
    """Names of the ground-truth feature columns: the source testbed's `features` when it has
    them (its batches then carry ``features_BxLxF``), else ["token"]."""
    src = source_of(spec)
    features = testbeds.get(src.task.name).features
    return [name for name, _ in features(src)] if features is not None else ["token"]


def feature_sizes(spec: Spec, default: int = 32) -> list[int]:
    """Number of values of each feature (values >= size are ignored by the probes): the source
    testbed's `features` if it has them; the vocabulary for "token"; else `default`."""
    src = source_of(spec)
    task = testbeds.get(src.task.name)
    if task.features is not None:
        return [int(size) for _, size in task.features(src)]
    return [task.vocab_size(src) if name == "token" else default
            for name in feature_names(spec)]


def _features(seqs, inputs_BxT: jax.Array) -> jax.Array:
    """[B, T, K] int32 features aligned with the model's input positions."""
    feats = getattr(seqs, "features_BxLxF", None)
    if feats is None:
        return inputs_BxT[..., None].astype(jnp.int32)
    return feats[:, : inputs_BxT.shape[1]].astype(jnp.int32)


def context(key: jax.Array, consts: Constants, spec: Spec, num: int) -> Context:
    """`num` fresh source sequences, the clean activations at the site, logits and features."""
    src = source_of(spec)
    seqs = sequences(key, consts, spec, num)
    inputs = seqs.tokens_BxL[:, :-1]
    logits, acts = model_of(src).apply({"params": consts.params}, inputs,
                                       return_activations=True)
    return Context(seqs, inputs, acts[spec.task.site], logits, _features(seqs, inputs))


def splice_logits(consts: Constants, spec: Spec, inputs_BxT: jax.Array,
                  site_BxTxD: jax.Array) -> jax.Array:
    """[B, T, V] source logits with the site's residual stream replaced by `site_BxTxD`."""
    edit = lambda site, x: site_BxTxD if site == spec.task.site else x
    return model_of(source_of(spec)).apply({"params": consts.params}, inputs_BxT, edit=edit)


def points(ctx: Context, batch_size: int) -> Batch:
    """The first `batch_size` in-sentence positions of the flattened sequences as SAE data
    points (positions whose first feature is -1, e.g. a pcfg's padding, go last; a task without
    such positions keeps its plain order)."""
    inputs = ctx.inputs_BxT
    d, k = ctx.acts_BxTxD.shape[-1], ctx.features_BxTxK.shape[-1]
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape).reshape(-1)
    outside = ctx.features_BxTxK[..., 0].reshape(-1) < 0
    take = jnp.argsort(outside, stable=True)[:batch_size]
    return Batch(ctx.acts_BxTxD.reshape(-1, d)[take], inputs.reshape(-1)[take].astype(jnp.int32),
                 positions[take, None].astype(jnp.float32),
                 ctx.features_BxTxK.reshape(-1, k)[take])


def num_sequences(spec: Spec, batch_size: int) -> int:
    """Sequences needed for `batch_size` points: the source task's `points_per_sequence(spec)`
    (a low estimate of its in-sentence positions) when it has one, else every input position."""
    src = source_of(spec)
    per_sequence = testbeds.get(src.task.name).points_per_sequence
    return math.ceil(batch_size / (per_sequence(src) if per_sequence
                                   else src.task.context_length - 1))


def sample(key: jax.Array, consts: Constants, spec: Spec, hparams: dict, batch_size: int,
           split: str = "id") -> Batch:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    return points(context(key, consts, spec, num_sequences(spec, batch_size)), batch_size)


def train_context(consts: Constants, run_key: jax.Array, step: jax.Array, spec: Spec
                  ) -> Context:
    """The sequences behind `train_batch` of `step` (same key: its points are their prefix)."""
    return context(streams.train_key(run_key, TRAIN_STREAM, step), consts, spec,
                   num_sequences(spec, spec.train.batch_size))


train_batch, eval_batch = streams.batches(sample, TRAIN_STREAM, {"id": EVAL_ID})


def num_concepts(spec: Spec) -> int:
    """The source's vocabulary: the token at a position is the known feature."""
    return testbeds.get(source_of(spec).task.name).vocab_size(source_of(spec))


def splice_losses(reconstruct, consts: Constants, run_key: jax.Array, spec: Spec,
                  num_sequences: int) -> dict[str, jax.Array]:
    """The source task's own training loss on fixed sequences (e.g. a pcfg's excludes padding):
    clean, with the site's
    activations replaced by `reconstruct(x_BxTxD)` (the SAE spliced in), and zero-ablated;
    `loss_recovered` = (zero - spliced) / (zero - clean)."""
    src = source_of(spec)
    seqs = sequences(jax.random.fold_in(run_key, EVAL_ID), consts, spec, num_sequences)
    model = model_of(src)

    def loss(edit_site):
        edit = lambda site, x: edit_site(x) if site == spec.task.site else x
        logits = model.apply({"params": consts.params}, seqs.tokens_BxL[:, :-1], edit=edit)
        return testbeds.get(src.task.name).objective.loss(logits, seqs)

    clean, spliced = loss(lambda x: x), loss(reconstruct)
    zero = loss(jnp.zeros_like)
    return {"clean_loss": clean, "spliced_loss": spliced, "zero_ablation_loss": zero,
            "loss_recovered": (zero - spliced) / jnp.maximum(zero - clean, 1e-9)}
