"""One sparse-autoencoder run: `init`, `train_step`, `evaluate`, `train_interval`, `train`.

The same contract as `loop.py` (pure, lax.scan, state a plain dict) so the sweep engine treats
an SAE sweep like any other: state = {"params", "opt_state", "step", "aux"} where "aux" holds the
dead-latent counters and BatchTopK's inference threshold. Each step: fresh points from the
testbed (`Testbed.sae`), `sae.loss` with the warmed-up sparsity coefficient, Adam(W) on the
gradients (projected to keep unit-norm decoder rows for the kinds that hold them, then
renormalised), `sae.update_aux`. Evaluation on the run's fixed held-out batch: MSE, FVU, L0,
dead and dense latent fractions, concept recovery against the testbed's ground truth (mean
best-latent F1), plus the testbed's own metrics (`SAEData.evaluate`). With `model.causal_coef`
> 0 in the group (a testbed with `SAEData.causal_error`) the loss adds causal_coef times that
error on the step's training points; a group whose largest coefficient is 0 compiles the
original step unchanged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxsim import testbeds
from jaxsim.config import Spec
from jaxsim.models import sae
from jaxsim.testbed import SAEView
from jaxsim.training import sae_metrics
from jaxsim.training import schedules
from jaxsim.training.loop import (INIT_STREAM, eval_batch, optimizer, scan_interval,
                                  start_params)

METRICS = ("mse", "fvu", "l0", "dead_fraction", "dense_fraction", "f1")
CAUSAL_STREAM = 3000  # sub-stream of the run key: interpolation weights of the causal term
INIT_BATCH = 1024     # points used to initialise b_dec


def _k_aux(spec: Spec) -> int:
    """AuxK's k: half the input dimension (Gao et al.)."""
    return max(_data(spec).input_dim(spec) // 2, 1)


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


def _data(spec: Spec):
    """What the testbed gives an SAE (`jaxsim.testbed.SAEData`)."""
    return testbeds.of(spec).sae


def init(key: jax.Array, spec: Spec, hparams: dict) -> dict:
    consts = testbeds.of(spec).constants(key, spec, hparams)
    params = sae.init(jax.random.fold_in(key, INIT_STREAM), _data(spec).input_dim(spec),
                      spec.model.d_sae, spec.model.kind,
                      threshold_init=hparams["model"]["threshold_init"])
    x = _data(spec).sample(jax.random.fold_in(key, INIT_STREAM), consts, spec, hparams,
                           INIT_BATCH).x_BxD
    scale = input_scale(x) if spec.model.normalize_input else jnp.ones((), jnp.float32)
    params = start_params(sae.init_b_dec(params, x * scale, spec.model.b_dec_init), spec,
                          hparams)
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
    return _data(spec).causal_error is not None and spec.model.causal_coef > 0


def view(params: dict, scale: jax.Array, spec: Spec, hp: dict,
         threshold: jax.Array | None = None) -> SAEView:
    """The SAE in the data's units (inputs scaled by `scale`, reconstructions scaled back);
    training-mode codes when `threshold` is None."""
    return SAEView(lambda x: sae.encode(params, x * scale, spec.model.kind, hp, threshold,
                                        spec.model.k),
                   lambda z: sae.decode(params, z) / scale, params)


def inference_view(state: dict, spec: Spec, hparams: dict) -> SAEView:
    """The trained SAE as evaluation uses it (BatchTopK: its learned threshold)."""
    threshold = state["aux"]["threshold"] if spec.model.kind == "batchtopk" else None
    return view(state["params"], state["input_scale"], spec, sae_hparams(spec, hparams),
                threshold)


def _loss_fn(state: dict, consts, key: jax.Array, spec: Spec, hparams: dict, hp: dict):
    """(loss function of the params, its scaled input batch) for this step."""
    scale = state["input_scale"]

    def sae_loss(params, x):
        return sae.loss(params, x, spec.model.kind, hp, state["aux"], spec.model.k, _k_aux(spec),
                        _multi(spec))

    if not causal_on(spec):
        x = testbeds.of(spec).train_batch(consts, key, state["step"], spec, hparams).x_BxD * scale
        return (lambda params: sae_loss(params, x)), x
    data = _data(spec)
    x, ctx = data.causal_points(consts, key, state["step"], spec, hparams)
    x = x * scale
    causal_key = jax.random.fold_in(jax.random.fold_in(key, CAUSAL_STREAM), state["step"])

    def loss_fn(params):
        total, aux = sae_loss(params, x)
        error = data.causal_error(view(params, scale, spec, hp), consts, ctx, causal_key, spec)
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
    scale = schedules.factor(state["step"], spec, hparams)
    params = optax.apply_updates(state["params"], jax.tree.map(lambda u: u * scale, updates))
    if kind in sae.UNIT_NORM_KINDS:
        params = sae.renormalize_decoder(params)
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
            "aux": sae.update_aux(state["aux"], z, hp), "input_scale": state["input_scale"]}, loss


def evaluate(state: dict, consts, key: jax.Array, spec: Spec, hparams: dict, batches=None
             ) -> dict:
    """METRICS and the testbed's own metrics on each fixed held-out batch, suffixed with the
    split (`batches`: `fixed_inputs(...)["eval"]`, else sampled here)."""
    testbed, data = testbeds.of(spec), _data(spec)
    out = {}
    for split in testbed.splits:
        batch = eval_batch(consts, key, spec, hparams, split, batches)
        z, x_hat = forward(state, batch.x_BxD, spec, hparams)
        f1_C, _ = sae_metrics.best_latent_f1(z, batch.concept_B, data.num_concepts(spec))
        values = {"mse": sae_metrics.mse(batch.x_BxD, x_hat),
                  "fvu": sae_metrics.fvu(batch.x_BxD, x_hat), "l0": sae_metrics.l0(z),
                  "dead_fraction": sae.dead_latents(state["aux"],
                                                    sae_hparams(spec, hparams)).mean(),
                  "dense_fraction": sae_metrics.dense_fraction(z), "f1": f1_C.mean()}
        if data.evaluate is not None:
            values.update(data.evaluate(inference_view(state, spec, hparams), consts, key, spec,
                                        hparams))
        out.update({f"{name}_{split}": v.astype(jnp.float32) for name, v in values.items()})
    return out


def train_interval(state: dict, key: jax.Array, spec: Spec, hparams: dict,
                   fixed: dict | None = None) -> tuple[dict, dict[str, jax.Array]]:
    return scan_interval(state, key, spec, hparams, train_step, evaluate, fixed)


def metric_names(spec: Spec) -> list[str]:
    names = METRICS + tuple(_data(spec).metric_names(spec))
    return ["train_loss"] + [f"{name}_{s}" for s in testbeds.of(spec).splits for name in names]
