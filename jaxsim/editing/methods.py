"""The closed forms of knowledge editing, on plain arrays (no model): the key statistics, ROME's
rank-one update, MEMIT's batch least squares, AlphaEdit's null-space projection, and the
shattering metric.

Convention: a linear layer maps a key row vector k [K] to k @ W_KxO + b_O (flax `Dense`, torch's
GPT-2 `Conv1D`); every update below is a delta for W_KxO. Each function is pure and jittable and
vmaps over edits (and runs); shapes: K key width (the MLP's hidden size), O value width (the
residual stream), E edits, N samples.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def second_moment(keys_NxK: jax.Array, weight_N: jax.Array | None = None) -> jax.Array:
    """C = E[k kᵀ] [K, K] over the (weighted) samples, not centred: the reference's `mom2`
    (rome/layer_stats.py, `SecondMoment`)."""
    if weight_N is None:
        weight_N = jnp.ones(keys_NxK.shape[0], keys_NxK.dtype)
    weighted = keys_NxK * weight_N[:, None]
    return weighted.T @ keys_NxK / jnp.maximum(weight_N.sum(), 1.0)


def rome_delta(key_mean_K: jax.Array, key_K: jax.Array, residual_O: jax.Array,
               cov_KxK: jax.Array) -> jax.Array:
    """ROME's rank-one update [K, O] (rome/compute_u.py, compute_v.py): the left vector
    u = C⁻¹ k̄ from the key averaged over contexts, the right vector (v* − W k − b) / (k · u)
    from the key k and the residual v* − W k − b of the edited prompt itself, so that the edited
    prompt's key maps exactly to v*. With k = k̄ this is the paper's closed form
    W' = W + (v* − W k*)(C⁻¹k*)ᵀ / (k*ᵀ C⁻¹ k*)."""
    u_K = jnp.linalg.solve(cov_KxK, key_mean_K)
    u_K = u_K / jnp.linalg.norm(u_K)
    return jnp.outer(u_K, residual_O / jnp.dot(key_K, u_K))


def memit_delta(keys_ExK: jax.Array, residual_ExO: jax.Array, cov_KxK: jax.Array,
                cov_weight: float | jax.Array) -> jax.Array:
    """MEMIT's batch update at one layer [K, O] (memit/memit_main.py): the least-squares solution
    that writes E key -> residual pairs while preserving the keys of the covariance,
    Δ = (λ C + Kᵀ K)⁻¹ Kᵀ R (the reference's `resid @ adj_k.T`, λ = `mom2_update_weight`),
    solved in float64 as the reference does when x64 is on (float32 otherwise)."""
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    keys, resid, cov = (a.astype(dtype) for a in (keys_ExK, residual_ExO, cov_KxK))
    adj_KxE = jnp.linalg.solve(cov_weight * cov + keys.T @ keys, keys.T)
    return (adj_KxE @ resid).astype(keys_ExK.dtype)


def null_space_projector(cov_KxK: jax.Array, threshold: float | jax.Array) -> jax.Array:
    """AlphaEdit's projector P = U₀ U₀ᵀ [K, K] onto the eigenvectors of the preserved keys'
    second moment whose eigenvalues are below `threshold` × the largest (the reference
    thresholds absolute singular values, `nullspace_threshold` 2e-2, at GPT-J's scale): an
    update ΔW with ΔW = P ΔW leaves every preserved key k (C k ≈ 0 in that subspace) unchanged."""
    values_K, vectors_KxK = jnp.linalg.eigh(cov_KxK)
    keep_K = values_K < threshold * values_K[-1]
    return (vectors_KxK * keep_K[None, :]) @ vectors_KxK.T


def alphaedit_delta(keys_ExK: jax.Array, residual_ExO: jax.Array, projector_KxK: jax.Array,
                    l2: float | jax.Array) -> jax.Array:
    """AlphaEdit's update [K, O] (AlphaEdit/AlphaEdit_main.py, one batch, no earlier edits):
    Δ = (P Kᵀ K + l2 I)⁻¹ P Kᵀ R, projected into the null space of the preserved keys."""
    k = keys_ExK.shape[1]
    lhs = projector_KxK @ (keys_ExK.T @ keys_ExK) + l2 * jnp.eye(k, dtype=keys_ExK.dtype)
    return jnp.linalg.solve(lhs, projector_KxK @ keys_ExK.T @ residual_ExO)


def pairwise_distances(reps_NxD: jax.Array) -> jax.Array:
    """Euclidean distances [N, N] between the rows (exact zeros on the diagonal)."""
    diff = reps_NxD[:, None, :] - reps_NxD[None, :, :]
    sq = jnp.sum(diff * diff, axis=-1)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def shattering(reps_before_NxD: jax.Array, reps_after_NxD: jax.Array) -> jax.Array:
    """R = ‖D* − D‖_F / ‖D‖_F (Nishi et al. 2025), D and D* the pairwise distances between the
    entity representations before and after the edit."""
    before, after = pairwise_distances(reps_before_NxD), pairwise_distances(reps_after_NxD)
    return jnp.linalg.norm(after - before) / jnp.linalg.norm(before)
