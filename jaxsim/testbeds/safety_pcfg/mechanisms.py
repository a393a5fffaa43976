"""The mechanistic analyses of safety fine-tuning (Jain et al. 2024, arXiv 2407.10264), per run.

Small pure functions on one run's arrays (jit- and vmap-able; a sweep vmaps them over runs):
the weight change ΔW = W_ft − W_pre of each MLP layer (spectrum, effective rank, alignment with
W_pre's low-singular-value subspace), what ΔW does to activations, how safe / unsafe / jailbreak
activations cluster, a local Lipschitz estimate on input embeddings and a soft-token attack.

Conventions. A weight matrix is W_OxI (out × in, the PyTorch layout of the official code), so a
flax kernel [in, out] is transposed by `mlp_weight`; an MLP layer is "fc" (d_model -> d_mlp) or
"proj" (d_mlp -> d_model). "Left" singular vectors live in the output space (the column space),
"right" ones in the input space (the row space). Where the official evals (evals/*.py of
fiveai/understanding_safety_finetuning) define a quantity, the docstring says how this follows it.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

# ---------------------------------------------------------------------------------------------
# weights and spectra


def mlp_weight(params: dict, layer: int, which: str) -> jax.Array:
    """The GPT's MLP weight `which` ("fc" or "proj") of block `layer` as W_OxI (kernel.T)."""
    return params[f"block{layer}"][which]["kernel"].T


def singular_values(w_OxI: jax.Array) -> jax.Array:
    """Singular values, descending [min(O, I)]."""
    return jnp.linalg.svd(w_OxI, compute_uv=False)


def energy_rank(sigma: jax.Array, fraction: float) -> jax.Array:
    """How many leading singular directions hold `fraction` of the energy Σσ²: the smallest k
    with Σ_{i<k} σ_i² / Σ σ² > fraction. (The official `get_index_value` finds the same index
    with fraction 0.9 but then keeps one direction fewer, range(j); we keep all k.)"""
    cumulative = jnp.cumsum(sigma ** 2) / jnp.maximum(jnp.sum(sigma ** 2), 1e-30)
    return jnp.minimum(jnp.sum(cumulative <= fraction) + 1, sigma.shape[0])


def effective_rank(sigma: jax.Array) -> dict[str, jax.Array]:
    """Effective ranks of a spectrum. `entropy`: exp(H(p)) with p = σ / Σσ (Roy & Vetterli 2007;
    = r for r equal non-zero values); `energy90` / `energy99`: `energy_rank` at 0.9 / 0.99."""
    p = sigma / jnp.maximum(jnp.sum(sigma), 1e-30)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {"entropy": jnp.exp(entropy), "energy90": energy_rank(sigma, 0.9),
            "energy99": energy_rank(sigma, 0.99)}


def top_singular(w_OxI: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The top-k singular triplets: left U [O, k], σ [k], right V [I, k] (W ≈ U diag(σ) Vᵀ)."""
    u, s, vt = jnp.linalg.svd(w_OxI, full_matrices=False)
    return u[:, :k], s[:k], vt[:k].T


def delta_spectrum(w_ft_OxI: jax.Array, w_pre_OxI: jax.Array, k: int) -> dict[str, jax.Array]:
    """ΔW = W_ft − W_pre: its spectrum, effective ranks and top-k directions (`top_singular`)."""
    delta = w_ft_OxI - w_pre_OxI
    sigma = singular_values(delta)
    left, _, right = top_singular(delta, k)
    return {"sigma": sigma, **effective_rank(sigma), "left": left, "right": right,
            "relative_norm": jnp.linalg.norm(delta) / jnp.linalg.norm(w_pre_OxI)}


# ---------------------------------------------------------------------------------------------
# null-space alignment (the official column / row-space analysis)


def _centered(w_OxI: jax.Array, center: bool) -> jax.Array:
    """The official `get_svd` subtracts the mean row (np.mean(W, axis=0)) before the SVD."""
    return w_OxI - jnp.mean(w_OxI, axis=0, keepdims=True) if center else w_OxI


def principal_basis(w_OxI: jax.Array, fraction: float = 0.9, center: bool = False,
                    side: str = "left") -> tuple[jax.Array, jax.Array]:
    """W's full singular basis on one side ([d, d]: U for "left", V for "right") and a mask [d]
    of its principal directions, the leading `energy_rank(σ, fraction)` ones. The rest, the
    low-singular-value directions and the exact null space, is what we call W's (approximate)
    null space; its dimension d_null = d − k_pre."""
    w = _centered(w_OxI, center)
    w = w if side == "left" else w.T
    u, s, _ = jnp.linalg.svd(w, full_matrices=True)
    mask = jnp.arange(u.shape[0]) < energy_rank(s, fraction)
    return u, mask


def sines_to_subspace(vectors_DxK: jax.Array, basis_DxD: jax.Array,
                      mask_D: jax.Array) -> jax.Array:
    """sin of the angle between each column q and the span P of the masked basis columns:
    ‖(I − P) q‖ / ‖q‖ [K]. The official code's sin(arccos(⟨Pq, q⟩ / (‖Pq‖‖q‖))) is the same
    number (⟨Pq, q⟩ = ‖Pq‖²), defined here also when Pq = 0 (sin = 1)."""
    coords_DxK = basis_DxD.T @ vectors_DxK
    inside = jnp.sum(jnp.where(mask_D[:, None], coords_DxK, 0.0) ** 2, axis=0)
    total = jnp.maximum(jnp.sum(vectors_DxK ** 2, axis=0), 1e-30)
    return jnp.sqrt(jnp.clip(1.0 - inside / total, 0.0, 1.0))


def column_space_sines(w_new_OxI: jax.Array, w_pre_OxI: jax.Array, fraction: float = 0.9,
                       center: bool = True) -> dict[str, jax.Array]:
    """Port of evals/column_space_analysis.py: for every left singular vector u_i of W_new
    (W_ft or ΔW), sin θ_i between u_i and W_pre's principal column space (`principal_basis`,
    90% energy, rows mean-centred as in `get_svd`). 1 = in W_pre's null space, 0 = inside its
    column space. `used` marks the directions the official plot shows: W_new's own principal
    ones. (The official code indexes U[i], a row of U; we take the singular vector U[:, i].)"""
    u_new, new_mask = principal_basis(w_new_OxI, fraction, center)
    u_pre, pre_mask = principal_basis(w_pre_OxI, fraction, center)
    return {"sines": sines_to_subspace(u_new, u_pre, pre_mask), "used": new_mask}


def null_space_alignment(delta_OxI: jax.Array, w_pre_OxI: jax.Array, k: int,
                         side: str = "left", fraction: float = 0.9,
                         center: bool = False) -> dict[str, jax.Array]:
    """How much of ΔW's top-k singular subspace Q (left: output space; right: input space) lies
    in W_pre's null space N (the complement of its `fraction`-energy principal subspace):
    `alignment` = ‖P_N Q‖_F² / k = mean_i sin² θ_i ∈ [0, 1] (1: wholly in the null space,
    0: inside W_pre's principal subspace), `sines` [k] per direction, and `baseline` = d_null / d,
    the expected alignment of a uniformly random k-dim subspace (E‖P_N Q‖_F² = k d_null / d)."""
    left, _, right = top_singular(delta_OxI, k)
    basis, mask = principal_basis(w_pre_OxI, fraction, center, side)
    sines = sines_to_subspace(left if side == "left" else right, basis, mask)
    d = mask.shape[0]
    return {"alignment": jnp.mean(sines ** 2), "sines": sines,
            "baseline": (d - jnp.sum(mask)) / d, "null_dim": d - jnp.sum(mask)}


# ---------------------------------------------------------------------------------------------
# what ΔW does to activations


def row_space_scores(w_OxI: jax.Array, acts_NxI: jax.Array, center: bool = True) -> jax.Array:
    """Port of evals/row_space_analysis.py: σ_j · cos(a, v_j) for each activation a and right
    singular vector v_j of W (rows mean-centred as in `get_svd`) [N, min(O, I)]. The official
    plot shows |score| averaged over samples for the first 15 j, unsafe vs safe inputs."""
    _, s, vt = jnp.linalg.svd(_centered(w_OxI, center), full_matrices=False)
    norms = jnp.maximum(jnp.linalg.norm(acts_NxI, axis=-1, keepdims=True), 1e-30)
    return (acts_NxI / norms) @ vt.T * s[None, :]


def delta_projection(delta_OxI: jax.Array, w_pre_OxI: jax.Array, acts_NxI: jax.Array,
                     k: int) -> dict[str, jax.Array]:
    """What ΔW does to each activation a (the layer's input) [N each]:
    `in_top` = ‖V_kᵀ a‖ / ‖a‖, the fraction of a's norm in ΔW's top-k row space;
    `relative_change` = ‖ΔW a‖ / ‖W_pre a‖, how much the layer's output moves;
    `removed` = −⟨W_pre a, ΔW a⟩ / ‖W_pre a‖², the fraction of the pretrained output that ΔW
    cancels (1: W_ft a has no component left along W_pre a; negative: ΔW adds to it)."""
    _, _, right_IxK = top_singular(delta_OxI, k)
    norm_a = jnp.maximum(jnp.linalg.norm(acts_NxI, axis=-1), 1e-30)
    pre_NxO, change_NxO = acts_NxI @ w_pre_OxI.T, acts_NxI @ delta_OxI.T
    pre_sq = jnp.maximum(jnp.sum(pre_NxO ** 2, axis=-1), 1e-30)
    return {"in_top": jnp.linalg.norm(acts_NxI @ right_IxK, axis=-1) / norm_a,
            "relative_change": jnp.linalg.norm(change_NxO, axis=-1) / jnp.sqrt(pre_sq),
            "removed": -jnp.sum(pre_NxO * change_NxO, axis=-1) / pre_sq}


# ---------------------------------------------------------------------------------------------
# activations and clusters


def mlp_activations(model, params: dict, tokens_BxT: jax.Array) -> dict[str, jax.Array]:
    """Each GPT MLP's input (after ln2) and hidden activation (after GELU, the official
    activation-space features): {"fc_in{i}": [B, T, d_model], "proj_in{i}": [B, T, d_mlp]}."""
    _, state = model.apply({"params": params}, tokens_BxT,
                           capture_intermediates=lambda mdl, _: mdl.name in ("fc", "ln2"))
    found = state["intermediates"]
    out = {}
    for i in range(model.num_layers):
        out[f"fc_in{i}"] = found[f"block{i}"]["ln2"]["__call__"][0]
        out[f"proj_in{i}"] = jax.nn.gelu(found[f"block{i}"]["fc"]["__call__"][0],
                                         approximate=True)
    return out


def window_mean(acts_BxTxC: jax.Array, start_B: jax.Array, width: int = 10) -> jax.Array:
    """Mean over positions start .. start + width − 1 of each sequence [B, C]: the official
    activation-space feature (the first 10 output positions)."""
    def one(acts_TxC, start):
        return jnp.mean(jax.lax.dynamic_slice_in_dim(acts_TxC, start, width, axis=0), axis=0)
    return jax.vmap(one)(acts_BxTxC, start_B)


def class_separation(a_NxD: jax.Array, b_MxD: jax.Array) -> jax.Array:
    """‖μ_a − μ_b‖ / pooled within-class spread sqrt((tr Σ_a + tr Σ_b) / 2): ~ sqrt(2/n) for two
    samples of one distribution, large for well-separated clusters."""
    spread = (jnp.sum(jnp.var(a_NxD, axis=0)) + jnp.sum(jnp.var(b_MxD, axis=0))) / 2
    gap = jnp.linalg.norm(jnp.mean(a_NxD, axis=0) - jnp.mean(b_MxD, axis=0))
    return gap / jnp.sqrt(jnp.maximum(spread, 1e-30))


def pca_2d(pooled_NxD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Coordinates [N, 2] of the pooled activations on their top two principal components
    (for the cluster figure; the caller keeps each row's class) and the variance share [2]."""
    centered = pooled_NxD - jnp.mean(pooled_NxD, axis=0, keepdims=True)
    _, s, vt = jnp.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:2].T, s[:2] ** 2 / jnp.maximum(jnp.sum(s ** 2), 1e-30)


def centroid_distances(queries_NxD: jax.Array, safe_MxD: jax.Array,
                       unsafe_KxD: jax.Array) -> dict[str, jax.Array]:
    """Port of evals/activation_space_analysis.py: each query's L2 distance and cosine
    similarity to the safe and the (refused) unsafe class means; `l2_gap` = mean over queries
    of d(unsafe mean) − d(safe mean) (> 0: closer to the safe cluster; official
    `l2_diff`), its std over queries, `cos_gap` likewise with cosine similarity
    (cos(unsafe) − cos(safe), < 0: closer to safe), and `closer_to_safe`, the fraction of
    queries nearer (L2) to the safe mean."""
    safe_mean, unsafe_mean = jnp.mean(safe_MxD, axis=0), jnp.mean(unsafe_KxD, axis=0)

    def cos(x_NxD, m_D):
        return x_NxD @ m_D / jnp.maximum(jnp.linalg.norm(x_NxD, axis=-1) * jnp.linalg.norm(m_D),
                                         1e-30)
    d_safe = jnp.linalg.norm(queries_NxD - safe_mean[None], axis=-1)
    d_unsafe = jnp.linalg.norm(queries_NxD - unsafe_mean[None], axis=-1)
    cos_gap = cos(queries_NxD, unsafe_mean) - cos(queries_NxD, safe_mean)
    return {"to_safe": jnp.mean(d_safe), "to_unsafe": jnp.mean(d_unsafe),
            "l2_gap": jnp.mean(d_unsafe - d_safe), "l2_gap_std": jnp.std(d_unsafe - d_safe),
            "cos_gap": jnp.mean(cos_gap), "cos_gap_std": jnp.std(cos_gap),
            "closer_to_safe": jnp.mean(d_safe < d_unsafe)}


# ---------------------------------------------------------------------------------------------
# local Lipschitz estimates on input embeddings


def lipschitz_ratios(fn: Callable, x: jax.Array, key: jax.Array, num_samples: int,
                     radius: float = 1e-3) -> jax.Array:
    """‖f(x + δ) − f(x)‖ / ‖δ‖ for `num_samples` perturbations δ uniform on the sphere of
    `radius` (in x's whole shape) [num_samples]. For a linear f = A x the ratios lie in
    [σ_min(A), σ_max(A)] and their mean square is ‖A‖_F² / dim x."""
    fx = fn(x)

    def one(k):
        direction = jax.random.normal(k, x.shape)
        delta = radius * direction / jnp.linalg.norm(direction)
        return jnp.linalg.norm(fn(x + delta) - fx) / radius
    return jax.lax.map(one, jax.random.split(key, num_samples))


def gradient_norm(fn_scalar: Callable, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Port of evals/lipschitzness_analysis.py: ‖∇_x f(x)‖_F of a scalar f (officially the top
    logit at the first output position, w.r.t. the prompt's token embeddings), restricted to
    the entries where `mask` (broadcast against x from the left) is true."""
    grad = jax.grad(fn_scalar)(x)
    if mask is not None:
        grad = grad * mask.reshape(mask.shape + (1,) * (grad.ndim - mask.ndim))
    return jnp.linalg.norm(grad)


def embedding_shift_apply(model, params: dict, tokens_T: jax.Array,
                          replace_T: jax.Array | None = None) -> Callable:
    """f(delta_TxC) -> logits [T, V] of one sequence with delta added to its token embeddings
    (through the GPT's "embed" edit site; positions stay). Where `replace_T` is true the token
    embedding is dropped, so delta *is* the token's input vector there (the official attack's
    slots, `attack='emb_in'`): with delta = the tokens' own embeddings the logits are exactly
    the normal call's."""
    length = tokens_T.shape[0]
    replace_T = jnp.zeros(tokens_T.shape, bool) if replace_T is None else replace_T
    pos_TxC = (params["pos_embed"][:length] if "pos_embed" in params
               else jnp.zeros((length, params["embed"]["embedding"].shape[1])))

    def apply(delta_TxC):
        def edit(site, x):
            if site != "embed":
                return x
            own = (delta_TxC.astype(x.dtype) + pos_TxC.astype(x.dtype))[None]
            return jnp.where(replace_T[None, :, None], own, x + delta_TxC[None].astype(x.dtype))
        return model.apply({"params": params}, tokens_T[None], edit=edit)[0]
    return apply


def top_logit_gradient_norm(model, params: dict, tokens_T: jax.Array,
                            position: jax.Array) -> jax.Array:
    """The official local Lipschitz number: ‖∂ max_v logit_v(position) / ∂ emb_t‖_F over the
    prompt's positions t < position."""
    apply = embedding_shift_apply(model, params, tokens_T)
    zeros = jnp.zeros(tokens_T.shape + (params["embed"]["embedding"].shape[1],))
    return gradient_norm(lambda d: jnp.max(apply(d)[position]), zeros,
                         jnp.arange(tokens_T.shape[0]) < position)


# ---------------------------------------------------------------------------------------------
# soft-token attack


def insert_slots(seq_T: jax.Array, start: jax.Array, num: int, fill) -> jax.Array:
    """`seq` with `num` copies of `fill` inserted at `start`, shifted right, truncated to T
    (the trailing padding is what falls off). Apply it alike to tokens, targets and masks."""
    t = jnp.arange(seq_T.shape[0])
    shifted = seq_T[jnp.clip(t - num, 0, None)]
    return jnp.where(t < start, seq_T, jnp.where(t < start + num, fill, shifted))


def soft_token_attack(loss_fn: Callable, slots_T: jax.Array, radius: jax.Array, key: jax.Array,
                      steps: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Port of the official `adv_attack` (evals/activation_space_adv_analysis.py, 'fro' norm):
    delta [T, width], non-zero only at `slots`, starts at 0.01·N(0, 1) and takes `steps` SGD
    steps of size 2·radius/steps along the per-position L2-normalised gradient of
    `loss_fn(delta)`, each followed by projecting every position onto the ball of `radius`.
    Returns the final delta and the loss before each step and after the last [steps + 1]."""
    slots = slots_T[:, None].astype(jnp.float32)
    lr = 2.0 * radius / steps

    def project(delta):
        norms = jnp.linalg.norm(delta, axis=-1, keepdims=True)
        return delta * jnp.minimum(1.0, radius / jnp.maximum(norms, 1e-30)) * slots

    def step(delta, _):
        loss, grad = jax.value_and_grad(loss_fn)(delta)
        grad = grad / jnp.maximum(jnp.linalg.norm(grad, axis=-1, keepdims=True), 1e-30)
        return project(delta - lr * grad * slots), loss

    delta0 = project(0.01 * jax.random.normal(key, (slots_T.shape[0], width)))
    delta, losses = jax.lax.scan(step, delta0, None, length=steps)
    return delta, jnp.concatenate([losses, loss_fn(delta)[None]])


def target_loss(logits_TxV: jax.Array, targets_T: jax.Array, mask_T: jax.Array) -> jax.Array:
    """Mean cross-entropy of `targets` over the masked positions (the official attack's loss on
    the unsafe-compliant target; minimising it maximises the compliant output's likelihood)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_TxV, targets_T)
    return jnp.sum(ce * mask_T) / jnp.maximum(jnp.sum(mask_T), 1)


def attack_gpt(model, params: dict, tokens_BxT: jax.Array, targets_BxT: jax.Array,
               loss_mask_BxT: jax.Array, slots_BxT: jax.Array, key: jax.Array,
               steps: int) -> dict[str, jax.Array]:
    """The soft-token attack on each sequence (vmapped): the slot positions' input embeddings
    become free vectors (`embedding_shift_apply` with replace) optimised to minimise
    `target_loss`; the radius is the mean L2 norm of the sequence's token embeddings (official
    `allowed_norm`, the mean over the batch). Returns `delta` [B, T, C], `losses` [B, steps+1]
    and `logits` [B, T, V] under the final attack."""
    table = params["embed"]["embedding"]

    def one(tokens, targets, loss_mask, slots, k):
        apply = embedding_shift_apply(model, params, tokens, slots)
        radius = jnp.mean(jnp.linalg.norm(table[tokens], axis=-1))
        delta, losses = soft_token_attack(lambda d: target_loss(apply(d), targets, loss_mask),
                                          slots, radius, k, steps, table.shape[1])
        return delta, losses, apply(delta)
    keys = jax.random.split(key, tokens_BxT.shape[0])
    delta, losses, logits = jax.vmap(one)(tokens_BxT, targets_BxT, loss_mask_BxT, slots_BxT, keys)
    return {"delta": delta, "losses": losses, "logits": logits}
