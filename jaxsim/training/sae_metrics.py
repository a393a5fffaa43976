"""Metrics of a sparse autoencoder: reconstruction, sparsity, and recovery of known concepts.

All functions are pure and jittable except `mcc`, which runs the Hungarian matching on the
host (scipy). Definitions follow SAELens / dictionary_learning / sparsify. A latent "fires" on an
input when its code is nonzero. Shapes in names: B batch, D input dim, F latents, C concepts,
K ground-truth variables or directions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DENSE_THRESHOLD = 0.1  # a latent firing on more than 10% of inputs counts as dense


def mse(x_BxD: jax.Array, x_hat_BxD: jax.Array) -> jax.Array:
    """mean_b sum_d (x - x_hat)^2."""
    return ((x_BxD - x_hat_BxD) ** 2).sum(-1).mean()


def fvu(x_BxD: jax.Array, x_hat_BxD: jax.Array) -> jax.Array:
    """Fraction of variance unexplained: sum_b ||x - x_hat||^2 / sum_b ||x - mean_b x||^2."""
    centred = x_BxD - x_BxD.mean(0, keepdims=True)
    return ((x_BxD - x_hat_BxD) ** 2).sum() / (centred ** 2).sum()


def l0(z_BxF: jax.Array) -> jax.Array:
    """mean_b #{i : z_i != 0}."""
    return (z_BxF != 0).sum(-1).mean()


def firing_rate(z_BxF: jax.Array) -> jax.Array:
    """[F] fraction of inputs on which each latent fires."""
    return (z_BxF != 0).mean(0)


def dead_fraction(z_BxF: jax.Array) -> jax.Array:
    """Fraction of latents that fire on no input of this batch (the batch is the window)."""
    return (firing_rate(z_BxF) == 0).mean()


def dense_fraction(z_BxF: jax.Array, threshold: float = DENSE_THRESHOLD) -> jax.Array:
    """Fraction of latents that fire on more than `threshold` (default 10%) of inputs."""
    return (firing_rate(z_BxF) > threshold).mean()


def concept_f1(z_BxF: jax.Array, concept_B: jax.Array, num_concepts: int) -> jax.Array:
    """[C, F] F1 of "latent f fires" as a detector of "the sample belongs to concept c"."""
    fires_BxF = (z_BxF != 0).astype(jnp.float32)
    member_BxC = jax.nn.one_hot(concept_B, num_concepts, dtype=jnp.float32)
    true_pos = member_BxC.T @ fires_BxF
    fired_F, members_C = fires_BxF.sum(0), member_BxC.sum(0)
    denom = fired_F[None, :] + members_C[:, None]
    return jnp.where(denom > 0, 2 * true_pos / jnp.maximum(denom, 1.0), 0.0)


def best_latent_f1(z_BxF: jax.Array, concept_B: jax.Array, num_concepts: int
                   ) -> tuple[jax.Array, jax.Array]:
    """([C] best F1 over latents, [C] index of that latent) per concept."""
    f1 = concept_f1(z_BxF, concept_B, num_concepts)
    return f1.max(-1), f1.argmax(-1)


def max_cosines(w_dec_FxD: jax.Array, directions_KxD: jax.Array,
                absolute: bool = True) -> jax.Array:
    """[K] for each true direction, the largest cosine with any decoder atom (|cos| by
    default: a direction and its negative are the same concept axis)."""
    atoms = w_dec_FxD / jnp.maximum(jnp.linalg.norm(w_dec_FxD, axis=-1, keepdims=True), 1e-12)
    dirs = directions_KxD / jnp.maximum(
        jnp.linalg.norm(directions_KxD, axis=-1, keepdims=True), 1e-12)
    cos_KxF = dirs @ atoms.T
    return (jnp.abs(cos_KxF) if absolute else cos_KxF).max(-1)


def mean_max_cosine(w_dec_FxD: jax.Array, directions_KxD: jax.Array,
                    valid_K: jax.Array | None = None, absolute: bool = True) -> jax.Array:
    """Mean over (valid) true directions of `max_cosines`."""
    best_K = max_cosines(w_dec_FxD, directions_KxD, absolute)
    if valid_K is None:
        return best_K.mean()
    return jnp.where(valid_K, best_K, 0.0).sum() / jnp.maximum(valid_K.sum(), 1)


def correlation_matrix(a_BxF: jax.Array, b_BxK: jax.Array) -> jax.Array:
    """[F, K] Pearson correlations between columns; 0 where a column is constant."""
    a = a_BxF - a_BxF.mean(0, keepdims=True)
    b = b_BxK - b_BxK.mean(0, keepdims=True)
    norm_a, norm_b = jnp.linalg.norm(a, axis=0), jnp.linalg.norm(b, axis=0)
    denom = norm_a[:, None] * norm_b[None, :]
    return jnp.where(denom > 0, (a.T @ b) / jnp.maximum(denom, 1e-30), 0.0)


def mcc(z_BxF: jax.Array, targets_BxK: jax.Array, valid_K=None) -> tuple[float, np.ndarray]:
    """Mean correlation coefficient after a one-to-one matching of latents to targets.

    Pearson |corr| between every latent and every ground-truth variable, then the Hungarian
    assignment (scipy, on the host) that maximises the total |corr|; returns (mean matched
    |corr| over the targets, [K] latent matched to each target, -1 if unmatched). The targets
    are whatever the caller passes: `concept_geometry.coordinate_targets` (per-concept latent
    coordinates) or `indicator_targets` (concept membership). With F < K only F targets can be
    matched; the others count as 0. `valid_K` drops target columns (e.g. padded dimensions).
    """
    return mcc_from_correlations(np.asarray(correlation_matrix(z_BxF, targets_BxK)), valid_K)


def mcc_from_correlations(corr_FxK: np.ndarray, valid_K=None) -> tuple[float, np.ndarray]:
    """`mcc` from a precomputed [F, K] correlation matrix (host side of a device computation)."""
    corr = np.abs(np.asarray(corr_FxK))
    keep = np.arange(corr.shape[1]) if valid_K is None else np.flatnonzero(np.asarray(valid_K))
    from scipy.optimize import linear_sum_assignment  # here: 0.6 s to import, every command
    rows, cols = linear_sum_assignment(corr[:, keep], maximize=True)
    matched = np.full(corr.shape[1], -1)
    matched[keep[cols]] = rows
    return float(corr[rows, keep[cols]].sum() / max(len(keep), 1)), matched


def l0_per_concept(z_BxF: jax.Array, concept_B: jax.Array, num_concepts: int) -> jax.Array:
    """[C] mean number of active latents on the samples of each concept (nan if none)."""
    member_BxC = jax.nn.one_hot(concept_B, num_concepts, dtype=jnp.float32)
    active_B = (z_BxF != 0).sum(-1).astype(jnp.float32)
    count_C = member_BxC.sum(0)
    return jnp.where(count_C > 0, member_BxC.T @ active_B / jnp.maximum(count_C, 1.0), jnp.nan)


def l0_vs_intrinsic_dim(z_BxF: jax.Array, concept_B: jax.Array, dims_C: jax.Array
                        ) -> dict[str, jax.Array]:
    """Does sparsity follow each concept's intrinsic dimension (SpaDE's adaptivity claim)?

    Returns per-concept L0 and dims, their Pearson correlation across concepts (0 if either is
    constant) and the least-squares slope of L0 on d_c.
    """
    l0_C = l0_per_concept(z_BxF, concept_B, dims_C.shape[0])
    dims = dims_C.astype(jnp.float32)
    seen = ~jnp.isnan(l0_C)
    count = jnp.maximum(seen.sum(), 1)
    l0_seen, dims_seen = jnp.where(seen, l0_C, 0.0), jnp.where(seen, dims, 0.0)
    dl = jnp.where(seen, l0_seen - l0_seen.sum() / count, 0.0)
    dd = jnp.where(seen, dims_seen - dims_seen.sum() / count, 0.0)
    cov, var_d, var_l = (dl * dd).sum(), (dd * dd).sum(), (dl * dl).sum()
    corr = jnp.where((var_d > 0) & (var_l > 0), cov / jnp.sqrt(var_d * var_l + 1e-30), 0.0)
    slope = jnp.where(var_d > 0, cov / jnp.maximum(var_d, 1e-30), 0.0)
    return {"l0_per_concept": l0_C, "dims": dims, "corr": corr, "slope": slope}


def summary(x_BxD: jax.Array, x_hat_BxD: jax.Array, z_BxF: jax.Array) -> dict[str, jax.Array]:
    """The concept-free metrics in one dict (jittable): mse, fvu, l0, dead, dense."""
    return {"mse": mse(x_BxD, x_hat_BxD), "fvu": fvu(x_BxD, x_hat_BxD), "l0": l0(z_BxF),
            "dead_fraction": dead_fraction(z_BxF), "dense_fraction": dense_fraction(z_BxF)}
