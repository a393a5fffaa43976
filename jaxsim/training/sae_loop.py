"""One sparse-autoencoder run: `init`, `train_step`, `evaluate`, `train_interval`, `train`.

The same contract as `loop.py` (pure, lax.scan, state a plain dict) so the sweep engine treats
an SAE sweep like any other: state = {"params", "opt_state", "step", "aux"} where "aux" holds the
dead-latent counters and BatchTopK's inference threshold. Each step: fresh data from the task,
`sae.loss` with the warmed-up sparsity coefficient, Adam(W) on the gradients (projected to keep
unit-norm decoder rows for the kinds that hold them, then renormalised), `sae.update_aux`.
Evaluation on the run's fixed held-out batch: MSE, FVU, L0, dead and dense latent fractions,
and concept recovery against the task's ground truth (mean best-latent F1; for subspaces, mean
max |cos| of decoder atoms to the true directions, `max_cos`); on activations, the source
model's next-token loss clean, with the SAE spliced in, and zero-ablated, and the
interpolation-consistency error of `training/causal.py` (`interp_error`). With
`model.causal_coef` > 0 in the group (activations only) the loss adds causal_coef times that
error on the step's training sequences; a group whose largest coefficient is 0 compiles the
original step unchanged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxsim import tasks
from jaxsim.config import Spec
from jaxsim.models import sae
from jaxsim.tasks import concept_geometry
from jaxsim.training import activations, causal, sae_metrics
from jaxsim.training.loop import INIT_STREAM, optimizer, scan_interval, warmup_factor

METRICS = ("mse", "fvu", "l0", "dead_fraction", "dense_fraction", "f1")
SPLICE_METRICS = ("clean_loss", "spliced_loss", "zero_ablation_loss", "loss_recovered",
                  "interp_error")
CAUSAL_STREAM = 3000  # sub-stream of the run key: interpolation weights of the causal term
SPLICE_SEQUENCES = 32
INIT_BATCH = 1024     # points used to initialise b_dec


def _k_aux(spec: Spec) -> int:
    """AuxK's k: half the input dimension (Gao et al.)."""
    return max(spec.task.dim // 2, 1)


def _multi(spec: Spec) -> bool:
    """Whether the group computes the Multi-TopK term (its largest weight is > 0)."""
    return spec.model.multi_topk_coef > 0


def sae_hparams(spec: Spec, hparams: dict) -> dict:
    """The `sae.loss` hp dict from the config's (traced) model hparams."""
    m = hparams["model"]
    return {"sparsity_coef": m["sparsity_coef"], "k": m["k"],
            "k_aux": jnp.asarray(_k_aux(spec), jnp.int32),
            "auxk_coef": m["auxk_coef"], "multi_topk_coef": m["multi_topk_coef"],
            "dead_steps": m["dead_steps"], "eps": m["bandwidth"],
            "threshold_decay": jnp.asarray(0.99, jnp.float32)}


def data(spec: Spec):
    """Where the SAE's inputs come from: the toy task, or a trained model's activations."""
    return activations if spec.task.name == "activations" else tasks.get(spec.task.name)


def init(key: jax.Array, spec: Spec, hparams: dict) -> dict:
    task = data(spec)
    consts = task.constants(key, spec, hparams)
    params = sae.init(jax.random.fold_in(key, INIT_STREAM), spec.task.dim, spec.model.d_sae,
                      spec.model.kind, threshold_init=hparams["model"]["threshold_init"])
    x = task.sample(jax.random.fold_in(key, INIT_STREAM), consts, spec, hparams, INIT_BATCH).x_BxD
    scale = input_scale(x) if spec.model.normalize_input else jnp.ones((), jnp.float32)
    params = sae.init_b_dec(params, x * scale, spec.model.b_dec_init)
    return {"params": params, "opt_state": optimizer(hparams).init(params),
            "step": jnp.zeros((), jnp.int32), "aux": sae.init_aux(spec.model.d_sae),
            "input_scale": scale}


def input_scale(x_BxD: jax.Array) -> jax.Array:
    """The constant c with E||c x||^2 = D (the SAELens / dictionary_learning normalisation)."""
    return jnp.sqrt(x_BxD.shape[-1] / jnp.mean(jnp.sum(x_BxD ** 2, -1))).astype(jnp.float32)


def forward(state: dict, x_BxD: jax.Array, spec: Spec, hparams: dict
            ) -> tuple[jax.Array, jax.Array]:
    """Inference codes and the reconstruction in the input's own units (the input scale and, for
    BatchTopK, the learned threshold applied)."""
    threshold = state["aux"]["threshold"] if spec.model.kind == "batchtopk" else None
    scale = state["input_scale"]
    z, x_hat = sae.forward(state["params"], x_BxD * scale, spec.model.kind,
                           sae_hparams(spec, hparams), threshold, spec.model.k)
    return z, x_hat / scale


def causal_on(spec: Spec) -> bool:
    """Whether the group trains with the causal term (static: the group's largest coefficient)."""
    return spec.task.name == "activations" and spec.model.causal_coef > 0


def interp_error(params: dict, scale: jax.Array, consts, ctx, key: jax.Array, spec: Spec,
                 hp: dict, threshold: jax.Array | None = None) -> jax.Array:
    """`causal.interpolation_error` of this SAE on `ctx` (training-mode codes when `threshold`
    is None; inputs scaled by `scale`, reconstructions back in input units)."""
    return causal.interpolation_error(
        lambda x: sae.encode(params, x * scale, spec.model.kind, hp, threshold, spec.model.k),
        lambda z: sae.decode(params, z) / scale,
        lambda inputs, x: activations.splice_logits(consts, spec, inputs, x), ctx, key)


def _loss_fn(state: dict, consts, key: jax.Array, spec: Spec, hparams: dict, hp: dict):
    """(loss function of the params, its scaled input batch) for this step."""
    scale = state["input_scale"]

    def sae_loss(params, x):
        return sae.loss(params, x, spec.model.kind, hp, state["aux"], spec.model.k, _k_aux(spec),
                        _multi(spec))

    if not causal_on(spec):
        x = data(spec).train_batch(consts, key, state["step"], spec, hparams).x_BxD * scale
        return (lambda params: sae_loss(params, x)), x
    ctx = activations.train_context(consts, key, state["step"], spec)
    x = activations.points(ctx, spec.train.batch_size).x_BxD * scale
    causal_key = jax.random.fold_in(jax.random.fold_in(key, CAUSAL_STREAM), state["step"])

    def loss_fn(params):
        total, aux = sae_loss(params, x)
        error = interp_error(params, scale, consts, ctx, causal_key, spec, hp)
        return total + hparams["model"]["causal_coef"] * error, aux

    return loss_fn, x


def forward_decode(state: dict, z_BxF: jax.Array) -> jax.Array:
    """Decode codes (e.g. edited ones) to the input's own units, as `forward` does."""
    return sae.decode(state["params"], z_BxF) / state["input_scale"]


def train_step(state: dict, consts, key: jax.Array, spec: Spec, hparams: dict
               ) -> tuple[dict, jax.Array]:
    kind = spec.model.kind
    hp = sae_hparams(spec, hparams)
    hp["sparsity_coef"] = hp["sparsity_coef"] * sae.coef_schedule(
        state["step"], hparams["train"]["sparsity_warmup_steps"])
    loss_fn, _ = _loss_fn(state, consts, key, spec, hparams, hp)
    (loss, (_, z)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    if kind in sae.UNIT_NORM_KINDS:
        grads = sae.project_decoder_grads(grads, state["params"])
    updates, opt_state = optimizer(hparams).update(grads, state["opt_state"], state["params"])
    scale = warmup_factor(state["step"], hparams)
    params = optax.apply_updates(state["params"], jax.tree.map(lambda u: u * scale, updates))
    if kind in sae.UNIT_NORM_KINDS:
        params = sae.renormalize_decoder(params)
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
            "aux": sae.update_aux(state["aux"], z, hp), "input_scale": state["input_scale"]}, loss


def evaluate(state: dict, consts, key: jax.Array, spec: Spec, hparams: dict) -> dict:
    """METRICS on the fixed held-out batch, suffixed with the split."""
    task = data(spec)
    out = {}
    for split in task.SPLITS:
        batch = task.eval_batch(consts, key, spec, hparams, split)
        z, x_hat = forward(state, batch.x_BxD, spec, hparams)
        f1_C, _ = sae_metrics.best_latent_f1(z, batch.concept_B, task.num_concepts(spec))
        values = {"mse": sae_metrics.mse(batch.x_BxD, x_hat),
                  "fvu": sae_metrics.fvu(batch.x_BxD, x_hat), "l0": sae_metrics.l0(z),
                  "dead_fraction": sae.dead_latents(state["aux"],
                                                    sae_hparams(spec, hparams)).mean(),
                  "dense_fraction": sae_metrics.dense_fraction(z), "f1": f1_C.mean()}
        if _subspaces(spec):
            dirs, valid = concept_geometry.true_directions(consts)
            values["max_cos"] = sae_metrics.mean_max_cosine(state["params"]["W_dec"], dirs, valid)
        if spec.task.name == "activations":
            def reconstruct(x_BxTxD):
                flat = x_BxTxD.reshape(-1, x_BxTxD.shape[-1])
                return forward(state, flat, spec, hparams)[1].reshape(x_BxTxD.shape)

            values.update(activations.splice_losses(reconstruct, consts, key, spec,
                                                    SPLICE_SEQUENCES))
            values["interp_error"] = eval_interp_error(state, consts, key, spec, hparams)
        out.update({f"{name}_{split}": v.astype(jnp.float32) for name, v in values.items()})
    return out


def eval_interp_error(state: dict, consts, key: jax.Array, spec: Spec, hparams: dict
                      ) -> jax.Array:
    """The causal term's error with inference codes on the fixed splice sequences."""
    ctx = activations.context(jax.random.fold_in(key, activations.EVAL_ID), consts, spec,
                              SPLICE_SEQUENCES)
    threshold = state["aux"]["threshold"] if spec.model.kind == "batchtopk" else None
    return interp_error(state["params"], state["input_scale"], consts, ctx,
                        jax.random.fold_in(key, CAUSAL_STREAM), spec,
                        sae_hparams(spec, hparams), threshold)


def train_interval(state: dict, key: jax.Array, spec: Spec, hparams: dict
                   ) -> tuple[dict, dict[str, jax.Array]]:
    return scan_interval(state, key, spec, hparams, train_step, evaluate, data(spec))


def _subspaces(spec: Spec) -> bool:
    return spec.task.name == "concept_geometry" and spec.task.geometry == "subspaces"


def metric_names(spec: Spec) -> list[str]:
    names = (METRICS + (("max_cos",) if _subspaces(spec) else ())
             + (SPLICE_METRICS if spec.task.name == "activations" else ()))
    return ["train_loss"] + [f"{name}_{s}" for s in data(spec).SPLITS for name in names]
