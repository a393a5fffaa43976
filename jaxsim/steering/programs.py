"""The two compiled programs of a steering study, per source shape group, vmapped over its runs:

fit       (params, hparams, seed) -> Activations of the fit prompts
evaluate  (params, hparams, seed, activations, sae vectors) -> for every intervention (method x
          variant x layer) and signed multiplier: the metrics of `metrics.summarize`, the side
          effect, and the intervention's residual-space norm; plus the unsteered baselines

Every method's vectors come from the same fit activations inside `evaluate`; the steered
evaluations are a `lax.map` over interventions with each intervention's signed multipliers
vmapped together, so a group compiles twice whatever the grid's size, and memory grows with the
number of multipliers, not of interventions.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import testbeds
from jaxsim.config import Spec
from jaxsim.steering import methods, metrics
from jaxsim.training.loop import model_of
from jaxsim.program_caches import program_cache

FIT, EVAL, RANDOM = range(3)


class Layout(NamedTuple):
    """What a group's programs compute (static, hashable)."""
    behaviour: str
    continuation: int
    fit_prompts: int
    eval_prompts: int
    methods: tuple               # in the config's order
    layers: tuple                # blocks steered by caa, iti and random
    iti_heads: int
    random_directions: int
    sae_variants: int            # SAE interventions per run (padded: see `sae_ok`)
    multipliers: tuple           # positive; each applied with + and -
    seed: int

    def interventions(self) -> list[tuple[str, int, int | None]]:
        """(method, variant, layer) of each intervention, in the programs' order (an SAE's
        layer is per run: None here)."""
        out = []
        for m in self.methods:
            if m == "sae":
                out += [("sae", v, None) for v in range(self.sae_variants)]
            else:
                variants = self.random_directions if m == "random" else 1
                out += [(m, v, layer) for v in range(variants) for layer in self.layers]
        return out

    def scales(self) -> np.ndarray:
        """[2M] signed multipliers: the promoting ones, then the suppressing ones."""
        m = np.asarray(self.multipliers, np.float32)
        return np.concatenate([m, -m])


def _contrast(spec: Spec, layout: Layout, hparams: dict, seed, stream: int, num: int):
    testbed = testbeds.of(spec)
    consts = testbed.constants(jax.random.key(seed), spec, hparams)
    key = jax.random.fold_in(jax.random.key(layout.seed), stream)
    return consts, testbed.behaviours[layout.behaviour].build(
        key, consts, spec, hparams, num, layout.continuation)


def fit(spec: Spec, layout: Layout, params: dict, hparams: dict, seed) -> methods.Activations:
    _, contrast = _contrast(spec, layout, hparams, seed, FIT, layout.fit_prompts)
    return methods.read_activations(model_of(spec), params, contrast, layout.continuation,
                                    spec.model.num_layers)


def _interventions(spec: Spec, layout: Layout, acts: methods.Activations, sae_resid_VxC,
                   sae_layer_V) -> tuple[methods.Intervention, dict]:
    """The stacked unit interventions in `layout.interventions()` order, and the vectors."""
    caa_SxC = methods.caa(acts)
    heads = spec.model.num_heads
    iti_SxHxD, accuracy_SxH = methods.iti(acts, layout.iti_heads or max(1, heads // 2))
    rand_RxSxC = methods.random_directions(
        jax.random.fold_in(jax.random.key(layout.seed), RANDOM),
        jnp.linalg.norm(caa_SxC, axis=-1), layout.random_directions, spec.model.d_model)
    zero_C, zero_HxD = jnp.zeros_like(caa_SxC[0]), jnp.zeros_like(iti_SxHxD[0])
    ivs = []
    for method, variant, layer in layout.interventions():
        if method == "caa":
            ivs.append((layer, caa_SxC[layer], zero_HxD))
        elif method == "iti":
            ivs.append((layer, zero_C, iti_SxHxD[layer]))
        elif method == "random":
            ivs.append((layer, rand_RxSxC[variant, layer], zero_HxD))
        else:
            ivs.append((sae_layer_V[variant], sae_resid_VxC[variant], zero_HxD))
    stacked = methods.Intervention(jnp.stack([jnp.asarray(i[0], jnp.int32) for i in ivs]),
                                   jnp.stack([i[1] for i in ivs]), jnp.stack([i[2] for i in ivs]))
    return stacked, {"caa": caa_SxC, "iti": iti_SxHxD, "iti_accuracy": accuracy_SxH}


def evaluate(spec: Spec, layout: Layout, params: dict, hparams: dict, seed,
             acts: methods.Activations, sae_resid_VxC, sae_layer_V) -> dict:
    testbed = testbeds.of(spec)
    model = model_of(spec)
    consts, contrast = _contrast(spec, layout, hparams, seed, EVAL, layout.eval_prompts)
    side_batch = testbed.eval_batch(consts, jax.random.key(seed), spec, hparams,
                                    testbed.splits[0])
    side_inputs = testbed.objective.inputs(side_batch)
    ivs, vectors = _interventions(spec, layout, acts, sae_resid_VxC, sae_layer_V)
    scales = jnp.asarray(layout.scales())
    lo0 = metrics.log_odds(model, params, contrast)
    clean_loss = testbed.objective.loss(model.apply({"params": params}, *side_inputs), side_batch)

    def one(item):
        iv, scale = item
        edit = metrics.steering_edit(iv, scale)
        lo = metrics.log_odds(model, params, contrast, edit)
        out = metrics.summarize(lo, lo0, contrast.valid_B, jnp.sign(scale))
        steered = model.apply({"params": params}, *side_inputs, edit=edit)
        out["side_effect"] = testbed.objective.loss(steered, side_batch) - clean_loss
        return out

    num_i, num_s = ivs.layer.shape[0], scales.shape[0]
    flat_iv = jax.tree.map(lambda a: jnp.repeat(a, num_s, axis=0), ivs)
    flat = jax.lax.map(one, (flat_iv, jnp.tile(scales, num_i)), batch_size=num_s)
    per = jax.tree.map(lambda a: a.reshape(num_i, num_s), flat)
    per["norm"] = jax.vmap(lambda iv: methods.effect_norm(params, iv, spec.model.num_layers))(ivs)
    resid_S = methods.residual_norms(model, params, contrast, spec.model.num_layers)
    per["resid_norm"] = resid_S[ivs.layer]
    mean_lo0 = jnp.sum(jnp.where(contrast.valid_B, lo0, 0)) / jnp.maximum(contrast.valid_B.sum(), 1)
    per.update(clean_loss=clean_loss, base_log_odds=mean_lo0,
               num_prompts=contrast.valid_B.sum().astype(jnp.int32), **vectors)
    return per


@program_cache()
def programs(spec: Spec, layout: Layout):
    """(jit of fit, jit of evaluate), each vmapped over a leading run axis."""
    fit_runs = jax.vmap(functools.partial(fit, spec, layout))
    eval_runs = jax.vmap(functools.partial(evaluate, spec, layout))
    return jax.jit(fit_runs), jax.jit(eval_runs)
