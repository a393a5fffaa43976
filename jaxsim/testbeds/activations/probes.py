"""Causal probes of SAE latents on a transformer's residual stream (Menon et al., NAACL 2025).

Correlation does not imply causation: a latent that tracks a ground-truth feature (the current
Markov state, bracket depth, part of speech) may not be what the model reads. For one SAE run
(vmapped over runs by the caller) at its final checkpoint, on fresh sequences of the source task:

1. Correlation, per feature k and value v: the latent most correlated (Pearson) with the
   indicator [feature_k = v], that correlation, the F1 of "latent fires" as a detector of the
   value, the AUC of its activation as a score for it, and the latent's mean activation on the
   value's points (its clamp value). Per feature also the largest |corr| with the raw (ordinal)
   feature value.
2. Intervention: at `POSITIONS` random positions per sequence, a point of value a gets a random
   other value b present in the sample; its code is edited (the best latent of a zeroed, the best
   latent of b set to b's clamp value), decoded, spliced back at that one position (the rest of
   the sequence clean) and the source model's next-token distribution at that position read.
   Compared with the unedited reconstruction spliced in ("base"): KL(base || intervened), and
   the shift toward what the feature says: shift = (TV(base, p_b) - TV(int, p_b)) / TV(p_a, p_b),
   1 when the prediction moved all the way to p_b, 0 when it did not move; success = the share
   of points with TV(int, p_b) < TV(int, p_a). p_v, the next-token distribution that value v
   implies, is per task (`EXPECTED`; Markov token: the sequence's chain row T[v]); otherwise the
   mean clean prediction over the sample's points of value v.
3. Control: the same code change moved onto two random other latents (the coefficient
   removed from a's latent taken from a random latent, the one added to b's given to another), so
   an effect the control matches is not specific to the feature's latents.
4. Ceiling ("patch"): the whole code replaced by that of a random sample point of value b, i.e.
   the most a change of this one position's activation at the site can do.
Everything is matmuls, sorts and gathers: no LAPACK inside the vmapped program.
Shapes: N points (sequences x positions), P intervened points, F latents, V feature values,
W vocabulary.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim.config import Spec
from jaxsim.training import sae_loop, sae_metrics
from jaxsim.testbeds.activations import source as activations

ANALYSIS_STREAM = 3000
POSITIONS = 8          # intervened positions per analysis sequence
MIN_SEQUENCES = 16
MIN_TV = 1e-3          # points whose p_a and p_b are closer than this are not scored
RULE = ("per feature value: latent of max Pearson corr with the value's indicator; intervention "
        "zeroes value a's latent and clamps value b's to its mean activation on b's points, "
        "splices the decoded point at its position; shift = (TV(base,p_b) - TV(int,p_b)) / "
        "TV(p_a,p_b), success = share with TV(int,p_b) < TV(int,p_a), kl = KL(base||int); "
        "control = the same coefficient changes on two random other latents; patch = the whole "
        "code of a random point of value b (the ceiling)")


def num_sequences(spec: Spec, num_points: int) -> int:
    """Analysis sequences for about `num_points` points (at least MIN_SEQUENCES)."""
    length = activations.source_of(spec).task.context_length - 1
    return max(math.ceil(num_points / length), MIN_SEQUENCES)


# --- ground truth of what a feature value does to the next token ------------------------------

def markov_expected(ctx, consts, feature: str, seq_P, value_P):
    """Markov token: the next state's law is the sequence's chain row T[value]."""
    if feature != "token":
        return None
    bank = consts.task.bank_NxKxK
    return bank[ctx.seqs.chain_B[seq_P], value_P]


EXPECTED = {"markov_mixture": markov_expected}


def expected(task_name: str, ctx, consts, feature: str, seq_P, value_P, member_NxV, probs_NxW):
    """[P, W] next-token distribution implied by feature value `value_P` at each point."""
    fn = EXPECTED.get(task_name)
    out = fn(ctx, consts, feature, seq_P, value_P) if fn is not None else None
    if out is not None:
        return out
    count_V = member_NxV.sum(0)
    mean_VxW = (member_NxV.T @ probs_NxW) / jnp.maximum(count_V, 1.0)[:, None]
    return mean_VxW[value_P]


# --- correlation statistics -------------------------------------------------------------------

def auc(scores_NxV: jax.Array, member_NxV: jax.Array) -> jax.Array:
    """[V] ROC AUC of each score column for its membership column (ties count one half:
    Mann-Whitney with average ranks); nan where a class is empty."""
    sorted_NxV = jnp.sort(scores_NxV, axis=0)

    def ranks(col_sorted, col):
        lo = jnp.searchsorted(col_sorted, col, side="left")
        hi = jnp.searchsorted(col_sorted, col, side="right")
        return (lo + hi + 1) / 2.0

    r_NxV = jax.vmap(ranks, in_axes=(1, 1), out_axes=1)(sorted_NxV, scores_NxV)
    n_pos = member_NxV.sum(0)
    n_neg = member_NxV.shape[0] - n_pos
    u = (r_NxV * member_NxV).sum(0) - n_pos * (n_pos + 1) / 2.0
    return jnp.where(n_pos * n_neg > 0, u / jnp.maximum(n_pos * n_neg, 1.0), jnp.nan)


def correlations(z_NxF: jax.Array, value_N: jax.Array, num_values: int) -> dict:
    """Best latent per value and its corr / F1 / AUC / clamp value; ordinal corr."""
    member = jax.nn.one_hot(value_N, num_values, dtype=jnp.float32)
    corr_FxV = sae_metrics.correlation_matrix(z_NxF, member)
    best_V = jnp.argmax(corr_FxV, axis=0)
    values = jnp.arange(num_values)
    f1_VxF = sae_metrics.concept_f1(z_NxF, value_N, num_values)
    scores_NxV = z_NxF[:, best_V]
    count_V = member.sum(0)
    ordinal = sae_metrics.correlation_matrix(z_NxF, value_N[:, None].astype(jnp.float32))[:, 0]
    return {"count": count_V, "best_latent": best_V, "corr": corr_FxV[best_V, values],
            "f1": f1_VxF[values, best_V], "auc": auc(scores_NxV, member),
            "clamp": (scores_NxV * member).sum(0) / jnp.maximum(count_V, 1.0),
            "ordinal_corr": jnp.abs(ordinal).max(), "ordinal_latent": jnp.abs(ordinal).argmax()}


# --- interventions ----------------------------------------------------------------------------

def clamp_codes(z_PxF, la_P, lb_P, cb_P):
    """Zero latent la, then set latent lb to cb (lb wins when la == lb)."""
    f = jnp.arange(z_PxF.shape[-1])[None, :]
    z = jnp.where(f == la_P[:, None], 0.0, z_PxF)
    return jnp.where(f == lb_P[:, None], cb_P[:, None], z)


def control_codes(key, z_PxF, la_P, lb_P, cb_P):
    """The coefficient changes of `clamp_codes` moved onto random latents ra != rb, both
    outside {la, lb}."""
    f_count = z_PxF.shape[-1]
    f = jnp.arange(f_count)[None, :]
    d_a = jnp.where(la_P == lb_P, 0.0, -jnp.take_along_axis(z_PxF, la_P[:, None], 1)[:, 0])
    d_b = cb_P - jnp.take_along_axis(z_PxF, lb_P[:, None], 1)[:, 0]
    outside = (f != la_P[:, None]) & (f != lb_P[:, None])
    key_a, key_b = jax.random.split(key)
    ra = jax.random.categorical(key_a, jnp.where(outside, 0.0, -jnp.inf))
    rb = jax.random.categorical(key_b, jnp.where(outside & (f != ra[:, None]), 0.0, -jnp.inf))
    return (z_PxF + d_a[:, None] * (f == ra[:, None]) + d_b[:, None] * (f == rb[:, None]))


def splice_points(consts, spec: Spec, ctx, seq_P, pos_P, x_PxD) -> jax.Array:
    """[P, W] log next-token probabilities with point p's activation replaced by x_PxD[p]."""
    acts = ctx.acts_BxTxD[seq_P]
    at = jnp.arange(acts.shape[1])[None, :, None] == pos_P[:, None, None]
    edited = jnp.where(at, x_PxD[:, None, :], acts)
    logits = activations.splice_logits(consts, spec, ctx.inputs_BxT[seq_P], edited)
    return jax.nn.log_softmax(logits[jnp.arange(seq_P.shape[0]), pos_P], -1)


def kl(logp_PxW, logq_PxW):
    return (jnp.exp(logp_PxW) * (logp_PxW - logq_PxW)).sum(-1)


def tv(p_PxW, q_PxW):
    return 0.5 * jnp.abs(p_PxW - q_PxW).sum(-1)


def _mean(x_P, mask_P):
    return jnp.where(mask_P, x_P, 0.0).sum() / jnp.maximum(mask_P.sum(), 1)


def effect(logp_base, logp_int, p_a, p_b, valid_P) -> dict:
    """KL(base || int), shift toward p_b (in units of TV(p_a, p_b)) and success rate."""
    p_int, p_base = jnp.exp(logp_int), jnp.exp(logp_base)
    gap = tv(p_a, p_b)
    scored = valid_P & (gap > MIN_TV)
    shift = (tv(p_base, p_b) - tv(p_int, p_b)) / jnp.maximum(gap, MIN_TV)
    return {"kl": _mean(kl(logp_base, logp_int), valid_P), "shift": _mean(shift, scored),
            "success": _mean((tv(p_int, p_b) < tv(p_int, p_a)).astype(jnp.float32), scored)}


def analyze_run(params, extra, run_key: jax.Array, spec: Spec, hparams: dict,
                num_seqs: int) -> dict:
    """Correlation, intervention and control statistics of one SAE, per feature (see above)."""
    consts = activations.constants(run_key, spec, hparams)
    key = jax.random.fold_in(run_key, ANALYSIS_STREAM)
    ctx = activations.context(key, consts, spec, num_seqs)
    b, t, d = ctx.acts_BxTxD.shape
    state = {"params": params, **extra}
    z_NxF, x_hat_NxD = sae_loop.forward(state, ctx.acts_BxTxD.reshape(-1, d), spec, hparams)
    logp_NxW = jax.nn.log_softmax(ctx.logits_BxTxV.reshape(b * t, -1), -1)
    pos_key, value_key, control_key, patch_key = jax.random.split(jax.random.fold_in(key, 1), 4)
    seq_P = jnp.repeat(jnp.arange(b), POSITIONS)
    if hasattr(ctx.seqs, "features_BxLxF"):   # inside sentences (features -1 elsewhere)
        inside_BxT = ctx.features_BxTxK[..., 0] >= 0
        inside_BxT = inside_BxT | ~inside_BxT.any(-1, keepdims=True)
        pos_P = jax.random.categorical(pos_key, jnp.where(inside_BxT[seq_P], 0.0, -jnp.inf))
    else:   # a Markov sequence after its first quarter, where in-context statistics formed
        pos_P = jax.random.randint(pos_key, seq_P.shape, t // 4, t)
    n_P = seq_P * t + pos_P
    z_PxF = z_NxF[n_P]
    logp_clean = logp_NxW[n_P]
    logp_base = splice_points(consts, spec, ctx, seq_P, pos_P, x_hat_NxD[n_P])
    decode = lambda z: sae_loop.forward_decode(state, z)
    task_name = activations.source_of(spec).task.name
    feats_NxK = ctx.features_BxTxK.reshape(b * t, -1)
    out = {"recon_kl": kl(logp_clean, logp_base).mean()}
    for k, (name, size) in enumerate(zip(activations.feature_names(spec),
                                         activations.feature_sizes(spec))):
        value_N = feats_NxK[:, k]
        stats = correlations(z_NxF, value_N, size)
        a_P = value_N[n_P]
        allowed = (stats["count"][None, :] > 0) & (jnp.arange(size)[None, :] != a_P[:, None])
        b_P = jax.random.categorical(jax.random.fold_in(value_key, k),
                                     jnp.where(allowed, 0.0, -jnp.inf))
        valid = (a_P >= 0) & (a_P < size) & allowed.any(-1)
        a_P, b_P = jnp.clip(a_P, 0, size - 1), jnp.clip(b_P, 0, size - 1)
        la, lb = stats["best_latent"][a_P], stats["best_latent"][b_P]
        cb = stats["clamp"][b_P]
        member = jax.nn.one_hot(value_N, size, dtype=jnp.float32)
        probs_NxW = jnp.exp(logp_NxW)
        p_a = expected(task_name, ctx, consts, name, seq_P, a_P, member, probs_NxW)
        p_b = expected(task_name, ctx, consts, name, seq_P, b_P, member, probs_NxW)
        z_probe = clamp_codes(z_PxF, la, lb, cb)
        z_control = control_codes(jax.random.fold_in(control_key, k), z_PxF, la, lb, cb)
        donor_P = jax.random.categorical(jax.random.fold_in(patch_key, k), jnp.where(
            value_N[None, :] == b_P[:, None], 0.0, -jnp.inf))
        patch = splice_points(consts, spec, ctx, seq_P, pos_P, x_hat_NxD[donor_P])
        probe = splice_points(consts, spec, ctx, seq_P, pos_P, decode(z_probe))
        control = splice_points(consts, spec, ctx, seq_P, pos_P, decode(z_control))
        out[name] = {**stats, "probe": effect(logp_base, probe, p_a, p_b, valid),
                     "control": effect(logp_base, control, p_a, p_b, valid),
                     "patch": effect(logp_base, patch, p_a, p_b, valid),
                     "base": effect(logp_base, logp_base, p_a, p_b, valid),
                     "expected_fit": _mean(tv(jnp.exp(logp_clean), p_a), valid),
                     "points": valid.sum()}
    return out


def summarise(run_metrics: dict) -> dict:
    """Host side for one run: arrays to JSON lists / floats."""
    def convert(x):
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        a = np.asarray(x)
        if a.dtype.kind in "iu":
            return a.tolist()
        a = np.where(np.isfinite(a), a, np.nan).astype(np.float64)
        return ([None if np.isnan(v) else v for v in a.tolist()] if a.ndim
                else (None if np.isnan(a) else float(a)))
    return convert(run_metrics)
