"""Sparse autoencoders as pure functions: ReLU (L1), TopK, BatchTopK, JumpReLU and SpaDE.

Params are plain dicts of arrays and every hyperparameter that does not change a shape lives in
`hp`, a dict of scalar arrays, so `vmap` over runs sees one pytree and e.g. TopK's k can be a
phase-diagram axis. Formulas and conventions follow the papers and SAELens /
dictionary_learning / sparsify.
Shapes in names: B batch, D input dim (d_in), F latents (d_sae), N data points.

Params: ``W_enc`` [D, F], ``W_dec`` [F, D] (rows are the dictionary atoms), ``b_enc`` [F],
``b_dec`` [D]; jumprelu adds ``log_threshold`` [F]; spade has no biases and adds the scalar
``lambda_pre`` (lambda = softplus(lambda_pre)); x_hat = z @ W_dec + b_dec.

hp keys (scalars, traceable; `default_hp` fills them all for every kind):
  sparsity_coef    L1 (relu), decoder-norm-weighted L1 (relu_decnorm), L0 (jumprelu) or
                   distance-weighted L1 (spade) coefficient; scale it with `coef_schedule`
  k                int32; active latents per input (topk), mean per input (batchtopk)
  k_aux            int32; AuxK latents (Gao et al.: about d_in / 2)
  auxk_coef        AuxK weight (1/32)
  multi_topk_coef  weight of the MSE of a 4k-TopK reconstruction (0 = off; Gao et al.: 1/8)
  dead_steps       int32; a latent that has not fired for this many steps is dead (AuxK)
  eps              JumpReLU straight-through bandwidth
  threshold_decay  BatchTopK inference-threshold EMA decay (SAELens 0.99; dictionary_learning
                   0.999)
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxsim.models.sparsity import batch_topk_mask, heaviside, jumprelu, sparsemax, topk_mask

Params = dict[str, jax.Array]
AuxState = dict[str, jax.Array]  # {"steps_since_fired_F": int32 [F], "threshold": float32 []}

KINDS = ("relu", "relu_decnorm", "topk", "batchtopk", "jumprelu", "spade")
UNIT_NORM_KINDS = ("relu", "topk", "batchtopk", "jumprelu")  # decoder rows held at norm 1
SUBTRACT_B_DEC = ("relu", "topk", "batchtopk")               # encoder sees x - b_dec
JUMPRELU_INIT_THRESHOLD = 1e-3                                # paper / dictionary_learning
DECNORM_INIT_NORM = 0.1                                       # April-update "heuristic init"


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown SAE kind {kind!r}; allowed: {KINDS}")


def default_hp(kind: str, d_in: int, **overrides) -> dict[str, jax.Array]:
    """Every hp key with the reference defaults for `kind` (ints int32, others float32)."""
    _check(kind)
    coef = {"relu": 0.1, "relu_decnorm": 0.1, "jumprelu": 0.01, "spade": 0.1}.get(kind, 0.0)
    hp = {"sparsity_coef": coef, "k": 4, "k_aux": max(d_in // 2, 1), "auxk_coef": 1 / 32,
          "multi_topk_coef": 0.0, "dead_steps": 1000, "eps": 1e-3, "threshold_decay": 0.99}
    unknown = set(overrides) - set(hp)
    if unknown:
        raise ValueError(f"unknown SAE hp keys {sorted(unknown)}; allowed: {sorted(hp)}")
    hp.update(overrides)
    return {name: jnp.asarray(v, jnp.int32 if name in ("k", "k_aux", "dead_steps")
                              else jnp.float32) for name, v in hp.items()}


def unit_rows(w_FxD: jax.Array) -> jax.Array:
    return w_FxD / jnp.linalg.norm(w_FxD, axis=-1, keepdims=True)


def init(key: jax.Array, d_in: int, d_sae: int, kind: str, dtype=jnp.float32,
         threshold_init: float | jax.Array = None) -> Params:
    """Fresh params: decoder rows random (unit norm, or 0.1 for relu_decnorm, N(0, 1) for
    spade), encoder = decoder transpose, biases zero (set b_dec with `init_b_dec`); jumprelu
    thresholds at `threshold_init` (default 1e-3, may be traced)."""
    _check(kind)
    w_FxD = jax.random.normal(key, (d_sae, d_in), dtype)
    if kind in UNIT_NORM_KINDS:
        w_FxD = unit_rows(w_FxD)
    elif kind == "relu_decnorm":
        w_FxD = DECNORM_INIT_NORM * unit_rows(w_FxD)
    params = {"W_enc": w_FxD.T, "W_dec": w_FxD}
    if kind == "spade":  # lambda = 1 / (2 d) at init; softplus^-1(y) = log(expm1(y))
        params["lambda_pre"] = jnp.asarray(math.log(math.expm1(1 / (2 * d_in))), dtype)
        return params
    params["b_enc"] = jnp.zeros((d_sae,), dtype)
    params["b_dec"] = jnp.zeros((d_in,), dtype)
    if kind == "jumprelu":
        theta = JUMPRELU_INIT_THRESHOLD if threshold_init is None else threshold_init
        params["log_threshold"] = jnp.full((d_sae,), jnp.log(jnp.asarray(theta, dtype)), dtype)
    return params


def geometric_median(x_NxD: jax.Array, iters: int = 100) -> jax.Array:
    """[D] Weiszfeld iterations from the mean (dictionary_learning's b_dec init)."""
    def body(m_D, _):
        w_N = 1.0 / jnp.maximum(jnp.linalg.norm(x_NxD - m_D[None, :], axis=-1), 1e-8)
        return (w_N[:, None] * x_NxD).sum(0) / w_N.sum(), None

    median, _ = jax.lax.scan(body, x_NxD.mean(0), None, length=iters)
    return median


def init_b_dec(params: Params, x_NxD: jax.Array, method: str = "median") -> Params:
    """Set b_dec to the geometric median ("median") or mean ("mean") of a data batch.

    No-op for kinds without b_dec (spade), so a training loop may call it for every kind.
    """
    if "b_dec" not in params:
        return params
    if method not in ("median", "mean"):
        raise ValueError(f"unknown b_dec init {method!r}; allowed: ('median', 'mean')")
    centre = geometric_median(x_NxD) if method == "median" else x_NxD.mean(0)
    return {**params, "b_dec": centre.astype(params["b_dec"].dtype)}


# --- activation functions (models/sparsity.py) -------------------------------------------

def sq_distances(x_BxD: jax.Array, w_FxD: jax.Array) -> jax.Array:
    """[B, F] squared Euclidean distances ||x_b - w_f||^2 (clipped at 0 against rounding)."""
    x2 = (x_BxD * x_BxD).sum(-1, keepdims=True)
    w2 = (w_FxD * w_FxD).sum(-1)[None, :]
    return jnp.maximum(x2 - 2.0 * x_BxD @ w_FxD.T + w2, 0.0)


# --- the model ------------------------------------------------------------------------------

def pre_activations(params: Params, x_BxD: jax.Array, kind: str) -> jax.Array:
    """[B, F] encoder scores before the sparsifying nonlinearity."""
    _check(kind)
    if kind == "spade":
        lam = jax.nn.softplus(params["lambda_pre"])
        return -lam * sq_distances(x_BxD, params["W_enc"].T)
    if kind in SUBTRACT_B_DEC:
        x_BxD = x_BxD - params["b_dec"][None, :]
    return x_BxD @ params["W_enc"] + params["b_enc"][None, :]


def _sparsify(params: Params, pre_BxF: jax.Array, kind: str, hp: dict,
              threshold: jax.Array | None, k_max: int | None = None) -> jax.Array:
    if kind == "spade":
        return sparsemax(pre_BxF)
    if kind == "jumprelu":
        theta_F = jnp.exp(params["log_threshold"])
        return jumprelu(pre_BxF, jnp.broadcast_to(theta_F[None, :], pre_BxF.shape), hp["eps"])
    acts = jax.nn.relu(pre_BxF)
    if kind == "topk":
        return jnp.where(topk_mask(acts, hp["k"], k_max), acts, 0.0)
    if kind == "batchtopk":
        keep = batch_topk_mask(acts, hp["k"], k_max) if threshold is None else acts > threshold
        return jnp.where(keep, acts, 0.0)
    return acts


def encode(params: Params, x_BxD: jax.Array, kind: str, hp: dict,
           threshold: jax.Array | None = None, k_max: int | None = None) -> jax.Array:
    """[B, F] latent codes. For batchtopk, `threshold=None` is the training-mode batch top-k;
    a scalar (e.g. ``aux_state["threshold"]``) gives inference codes acts * (acts > threshold).
    `k_max`: a static bound on hp["k"] that makes (batch) top-k fast (`topk_mask`)."""
    return _sparsify(params, pre_activations(params, x_BxD, kind), kind, hp, threshold, k_max)


def decode(params: Params, z_BxF: jax.Array) -> jax.Array:
    """[B, D] reconstruction z @ W_dec (+ b_dec where the kind has one)."""
    x_hat = z_BxF @ params["W_dec"]
    return x_hat + params["b_dec"][None, :] if "b_dec" in params else x_hat


def forward(params: Params, x_BxD: jax.Array, kind: str, hp: dict,
            threshold: jax.Array | None = None, k_max: int | None = None
            ) -> tuple[jax.Array, jax.Array]:
    """(z_BxF, x_hat_BxD)."""
    z = encode(params, x_BxD, kind, hp, threshold, k_max)
    return z, decode(params, z)


def sq_error(x_BxD: jax.Array, x_hat_BxD: jax.Array) -> jax.Array:
    """mean_b ||x - x_hat||^2 (summed over features, as the reference libraries do)."""
    return ((x_BxD - x_hat_BxD) ** 2).sum(-1).mean()


def auxk_loss(params: Params, acts_BxF: jax.Array, residual_BxD: jax.Array,
              dead_F: jax.Array, k_aux: jax.Array, k_aux_max: int | None = None) -> jax.Array:
    """Gao et al. AuxK: reconstruct the detached residual from the top-k_aux dead latents.

    No b_dec in e_hat (sparsify issue #132); normalised by the residual's variance
    (dictionary_learning); 0 when no latent is dead.
    """
    e_BxD = jax.lax.stop_gradient(residual_BxD)
    masked = jnp.where(dead_F[None, :], acts_BxF, -jnp.inf)
    keep = topk_mask(masked, k_aux, k_aux_max) & dead_F[None, :]
    e_hat = jnp.where(keep, acts_BxF, 0.0) @ params["W_dec"]
    variance = ((e_BxD - e_BxD.mean(0, keepdims=True)) ** 2).sum(-1).mean()
    return jnp.where(dead_F.any(), sq_error(e_BxD, e_hat) / jnp.maximum(variance, 1e-12), 0.0)


def loss(params: Params, x_BxD: jax.Array, kind: str, hp: dict, aux_state: AuxState,
         k_max: int | None = None, k_aux_max: int | None = None, multi_topk: bool = True
         ) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]:
    """Training loss and ``(metrics, z_BxF)`` (z for `update_aux`), for `jax.value_and_grad(
    ..., has_aux=True)`. Metrics (same keys for every kind): mse, fvu, l0, penalty (the
    unweighted sparsity term), auxk, multi_topk. `k_max`, `k_aux_max`: static bounds on
    hp["k"] and hp["k_aux"] that make the top-k masks fast (results unchanged). `multi_topk`
    False (static) skips the Multi-TopK term: for runs whose weight is 0 the loss, gradients
    and results are bit-identical, only its metric reads 0."""
    pre = pre_activations(params, x_BxD, kind)
    z = _sparsify(params, pre, kind, hp, None, k_max)
    x_hat = decode(params, z)
    mse = sq_error(x_BxD, x_hat)
    zero = jnp.zeros((), mse.dtype)
    penalty, auxk, multi = zero, zero, zero
    if kind == "relu":
        penalty = z.sum(-1).mean()
    elif kind == "relu_decnorm":
        penalty = (z * jnp.linalg.norm(params["W_dec"], axis=-1)[None, :]).sum(-1).mean()
    elif kind == "jumprelu":
        theta = jnp.broadcast_to(jnp.exp(params["log_threshold"])[None, :], pre.shape)
        penalty = heaviside(pre, theta, hp["eps"]).sum(-1).mean()
    elif kind == "spade":
        penalty = (z * sq_distances(x_BxD, params["W_dec"])).sum(-1).mean()
    else:
        acts = jax.nn.relu(pre)
        auxk = auxk_loss(params, acts, x_BxD - x_hat, dead_latents(aux_state, hp), hp["k_aux"],
                         k_aux_max)
        if kind == "topk" and multi_topk:
            z4 = jnp.where(topk_mask(acts, 4 * hp["k"], None if k_max is None else 4 * k_max),
                           acts, 0.0)
            multi = sq_error(x_BxD, decode(params, z4))
    total = (mse + hp["sparsity_coef"] * penalty + hp["auxk_coef"] * auxk
             + hp["multi_topk_coef"] * multi)
    centred = x_BxD - x_BxD.mean(0, keepdims=True)
    metrics = {"mse": mse, "fvu": mse / jnp.maximum((centred ** 2).sum(-1).mean(), 1e-12),
               "l0": (z != 0).sum(-1).mean(), "penalty": penalty, "auxk": auxk,
               "multi_topk": multi}
    return total, (metrics, z)


# --- training-state helpers -----------------------------------------------------------------

def init_aux(d_sae: int) -> AuxState:
    """No latent dead yet; BatchTopK threshold unset (-1 until the first update)."""
    return {"steps_since_fired_F": jnp.zeros((d_sae,), jnp.int32),
            "threshold": jnp.asarray(-1.0, jnp.float32)}


def dead_latents(aux_state: AuxState, hp: dict) -> jax.Array:
    """[F] bool: latents that have not fired for at least ``hp["dead_steps"]`` steps."""
    return aux_state["steps_since_fired_F"] >= hp["dead_steps"]


def update_aux(aux_state: AuxState, z_BxF: jax.Array, hp: dict) -> AuxState:
    """After a step: reset the counter of latents that fired in `z`, add one to the others;
    move the BatchTopK threshold toward the smallest positive code of the batch (EMA)."""
    fired_F = (z_BxF != 0).any(0)
    steps = jnp.where(fired_F, 0, aux_state["steps_since_fired_F"] + 1)
    positive = z_BxF > 0
    min_pos = jnp.where(positive, z_BxF, jnp.inf).min().astype(jnp.float32)
    old, decay = aux_state["threshold"], hp["threshold_decay"]
    ema = jnp.where(old < 0, min_pos, decay * old + (1 - decay) * min_pos)
    return {"steps_since_fired_F": steps, "threshold": jnp.where(positive.any(), ema, old)}


def project_decoder_grads(grads: Params, params: Params) -> Params:
    """Remove from each decoder-row gradient its component along that row (ConstrainedAdam),
    so a small step leaves the unit norm unchanged to first order."""
    unit = unit_rows(params["W_dec"])
    g = grads["W_dec"]
    return {**grads, "W_dec": g - (g * unit).sum(-1, keepdims=True) * unit}


def renormalize_decoder(params: Params) -> Params:
    """Decoder rows back to unit norm (after each optimizer step, for UNIT_NORM_KINDS)."""
    return {**params, "W_dec": unit_rows(params["W_dec"])}


def coef_schedule(step: jax.Array, warmup_steps: jax.Array) -> jax.Array:
    """Linear sparsity-coefficient warm-up factor: step / warmup_steps, capped at 1 (1 when
    warmup_steps is 0). Multiply ``hp["sparsity_coef"]`` by it."""
    warm = jnp.asarray(warmup_steps, jnp.float32)
    frac = jnp.asarray(step, jnp.float32) / jnp.maximum(warm, 1.0)
    return jnp.where(warm > 0, jnp.clip(frac, 0.0, 1.0), 1.0)
