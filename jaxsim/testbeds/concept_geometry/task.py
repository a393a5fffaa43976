"""Toy data with known concepts, for testing what sparse autoencoders recover.

Two families, both gymnax style: ``*_constants(key, ...)`` draws a fixed ground truth from a key
(once per run), `draw(key, consts, batch_size)` draws a `Batch` from it (pure, jittable). The
task interface of the sweeps (`constants`, `sample`, `train_batch`, `eval_batch` from a Spec and
hparams) is at the end of the file.

* subspaces (SpaDE's heterogeneity test): concept c is a Gaussian cluster on a random
  d_c-dimensional affine subspace of R^D: x = mean_c + coords @ basis_c + noise. The mix of
  intrinsic dimensions is set by `dim_weights`, so per-concept sparsity (L0) can be compared with
  d_c.
* manifolds: each concept is a 1-D arc (interleaved "moons" or concentric circles) in a random
  2-D plane of R^D. No linear map separates them, so a linear encoder + threshold must mix
  concepts, while a local (distance-based) encoder need not.

Random draws that define concept c come from ``fold_in(stream_key, c)``, so concept c is the
same whatever the number of concepts. Orthonormal frames use Gram-Schmidt (matmuls only, no
LAPACK: batched CPU LAPACK calls have deadlocked under vmap on 2 threads in this project).
Shapes in names: B batch, D ambient dim, C concepts, M max intrinsic dim, K = C * M.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

BASES, MEANS, EMBED = range(3)  # sub-streams of the constants key
PICK, COORDS, NOISE = range(3)  # sub-streams of the sample key


class Batch(NamedTuple):
    x_BxD: jax.Array       # float32 points
    concept_B: jax.Array   # int32 label of the generating concept
    coords_BxM: jax.Array  # latent coordinates: subspaces, Gaussian coords (0 beyond d_c);
                           # manifolds, M = 1, position along the arc in [0, 1]


class SubspaceConstants(NamedTuple):
    means_CxD: jax.Array      # cluster centres
    bases_CxMxD: jax.Array    # orthonormal rows spanning each concept; rows >= dims_C[c] are 0
    dims_C: jax.Array         # int32 intrinsic dimension d_c
    weights_C: jax.Array      # concept probabilities
    coord_std: jax.Array      # std of each in-subspace coordinate
    noise_std: jax.Array      # isotropic ambient noise std


class ManifoldConstants(NamedTuple):
    embed_2xD: jax.Array      # orthonormal rows: the plane holding the arcs
    centres_Cx2: jax.Array    # arc c: centre + radius * (cos a, sin a), a in start + [0, span]
    radii_C: jax.Array
    starts_C: jax.Array
    spans_C: jax.Array
    weights_C: jax.Array
    noise_std: jax.Array


def orthonormal_rows(key: jax.Array, m: int, d: int) -> jax.Array:
    """[m, d] random orthonormal rows (Haar up to sign), by Gram-Schmidt applied twice."""
    def gram_schmidt(rows_MxD):
        def body(done_MxD, i):
            v = rows_MxD[i]
            v = v - (done_MxD @ v) @ done_MxD  # rows not yet done are zero
            return done_MxD.at[i].set(v / jnp.linalg.norm(v)), None

        out, _ = jax.lax.scan(body, jnp.zeros_like(rows_MxD), jnp.arange(m))
        return out

    return gram_schmidt(gram_schmidt(jax.random.normal(key, (m, d), jnp.float32)))


def _probs(weights, n: int) -> jax.Array:
    w = jnp.ones((n,), jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    return w / w.sum()


def subspace_constants(key: jax.Array, num_concepts: int = 8, d_ambient: int = 64,
                       dim_choices: Sequence[int] = (1, 2, 4, 8), dim_weights=None,
                       centre_norm: float = 4.0, coord_std: float = 1.0,
                       noise_std: float = 0.0, concept_weights=None,
                       center_norm: float | None = None) -> SubspaceConstants:
    """Ground truth of the subspaces family.

    Concept c gets the intrinsic dimension at quantile (c + 1/2) / C of the distribution
    `dim_weights` over `dim_choices` (deterministic, so the realised mix matches the weights up
    to rounding), a random orthonormal basis and a centre of norm `centre_norm` (0: linear
    subspaces through the origin; `center_norm`, the old spelling, is accepted too).
    `concept_weights` are sampling probabilities (uniform).
    """
    centre_norm = centre_norm if center_norm is None else center_norm
    max_dim = max(dim_choices)
    cdf = jnp.cumsum(_probs(dim_weights, len(dim_choices)))
    quantiles = (jnp.arange(num_concepts, dtype=jnp.float32) + 0.5) / num_concepts
    pick = jnp.minimum(jnp.searchsorted(cdf, quantiles, side="right"), len(dim_choices) - 1)
    dims_C = jnp.asarray(dim_choices, jnp.int32)[pick]

    def concept(c):
        basis = orthonormal_rows(jax.random.fold_in(jax.random.fold_in(key, BASES), c),
                                 max_dim, d_ambient)
        basis = jnp.where((jnp.arange(max_dim) < dims_C[c])[:, None], basis, 0.0)
        mean = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, MEANS), c),
                                 (d_ambient,), jnp.float32)
        return basis, centre_norm * mean / jnp.linalg.norm(mean)

    bases, means = jax.vmap(concept)(jnp.arange(num_concepts))
    return SubspaceConstants(means, bases, dims_C, _probs(concept_weights, num_concepts),
                             jnp.asarray(coord_std, jnp.float32),
                             jnp.asarray(noise_std, jnp.float32))


def _arcs(key, d_ambient, centres, radii, starts, spans, concept_weights, noise_std):
    arrays = [jnp.asarray(v, jnp.float32) for v in (centres, radii, starts, spans)]
    return ManifoldConstants(orthonormal_rows(jax.random.fold_in(key, EMBED), 2, d_ambient),
                             *arrays, _probs(concept_weights, len(radii)),
                             jnp.asarray(noise_std, jnp.float32))


def moons_constants(key: jax.Array, d_ambient: int = 64, noise_std: float = 0.05,
                    concept_weights=None) -> ManifoldConstants:
    """Two interleaved unit half-circles (sklearn's "moons", centred), in a random plane."""
    return _arcs(key, d_ambient, [[-0.5, -0.25], [0.5, 0.25]], [1.0, 1.0], [0.0, math.pi],
                 [math.pi, math.pi], concept_weights, noise_std)


def circles_constants(key: jax.Array, num_concepts: int = 2, d_ambient: int = 64,
                      noise_std: float = 0.05, concept_weights=None) -> ManifoldConstants:
    """Concentric full circles of radii (c + 1) / C, in a random plane."""
    radii = [(c + 1) / num_concepts for c in range(num_concepts)]
    return _arcs(key, d_ambient, [[0.0, 0.0]] * num_concepts, radii, [0.0] * num_concepts,
                 [2 * math.pi] * num_concepts, concept_weights, noise_std)


def _pick(key: jax.Array, weights_C: jax.Array, batch_size: int) -> jax.Array:
    logits = jnp.log(weights_C)
    return jax.random.categorical(jax.random.fold_in(key, PICK), logits, shape=(batch_size,))


def sample_subspaces(key: jax.Array, consts: SubspaceConstants, batch_size: int) -> Batch:
    concept_B = _pick(key, consts.weights_C, batch_size).astype(jnp.int32)
    max_dim = consts.bases_CxMxD.shape[1]
    active_BxM = jnp.arange(max_dim)[None, :] < consts.dims_C[concept_B][:, None]
    coords = jax.random.normal(jax.random.fold_in(key, COORDS), (batch_size, max_dim))
    coords = jnp.where(active_BxM, consts.coord_std * coords, 0.0)
    x = consts.means_CxD[concept_B] + jnp.einsum("bm,bmd->bd", coords,
                                                 consts.bases_CxMxD[concept_B])
    noise = jax.random.normal(jax.random.fold_in(key, NOISE), x.shape)
    return Batch(x + consts.noise_std * noise, concept_B, coords)


def sample_manifolds(key: jax.Array, consts: ManifoldConstants, batch_size: int) -> Batch:
    concept_B = _pick(key, consts.weights_C, batch_size).astype(jnp.int32)
    t_B = jax.random.uniform(jax.random.fold_in(key, COORDS), (batch_size,))
    angle = consts.starts_C[concept_B] + t_B * consts.spans_C[concept_B]
    unit_Bx2 = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    plane_Bx2 = consts.centres_Cx2[concept_B] + consts.radii_C[concept_B][:, None] * unit_Bx2
    x = plane_Bx2 @ consts.embed_2xD
    noise = jax.random.normal(jax.random.fold_in(key, NOISE), x.shape)
    return Batch(x + consts.noise_std * noise, concept_B, t_B[:, None])


def draw(key: jax.Array, consts: SubspaceConstants | ManifoldConstants,
         batch_size: int) -> Batch:
    """`batch_size` points of the family that `consts` belongs to."""
    if isinstance(consts, SubspaceConstants):
        return sample_subspaces(key, consts, batch_size)
    return sample_manifolds(key, consts, batch_size)


# --- ground truth for the metrics -----------------------------------------------------------

def true_directions(consts: SubspaceConstants) -> tuple[jax.Array, jax.Array]:
    """(directions_KxD, valid_K): every concept's basis rows, K = C * M, in concept-major order;
    `valid` marks the rows that exist (m < d_c)."""
    c, m, d = consts.bases_CxMxD.shape
    valid = jnp.arange(m)[None, :] < consts.dims_C[:, None]
    return consts.bases_CxMxD.reshape(c * m, d), valid.reshape(c * m)


def coordinate_targets(batch: Batch, num_concepts: int) -> jax.Array:
    """[B, C * M] ground-truth latent variables for MCC: column c * M + m holds coordinate m of
    the sample if it belongs to concept c, else 0 (columns line up with `true_directions`)."""
    onehot_BxC = jax.nn.one_hot(batch.concept_B, num_concepts, dtype=batch.coords_BxM.dtype)
    per_BxCxM = onehot_BxC[:, :, None] * batch.coords_BxM[:, None, :]
    return per_BxCxM.reshape(batch.coords_BxM.shape[0], -1)


def indicator_targets(concept_B: jax.Array, num_concepts: int) -> jax.Array:
    """[B, C] float one-hot concept membership (targets for MCC or F1)."""
    return jax.nn.one_hot(concept_B, num_concepts, dtype=jnp.float32)


def arc_distances(consts: ManifoldConstants, x_BxD: jax.Array) -> jax.Array:
    """[B, C] Euclidean distance in the plane from the projection of x to each concept's arc."""
    p_Bx2 = x_BxD @ consts.embed_2xD.T
    rel_BxCx2 = p_Bx2[:, None, :] - consts.centres_Cx2[None, :, :]
    r_BxC = jnp.linalg.norm(rel_BxCx2, axis=-1)
    angle = jnp.arctan2(rel_BxCx2[..., 1], rel_BxCx2[..., 0]) - consts.starts_C[None, :]
    on_arc = jnp.mod(angle, 2 * math.pi) <= consts.spans_C[None, :]

    def endpoint(a_C):
        e_Cx2 = consts.centres_Cx2 + consts.radii_C[:, None] * jnp.stack(
            [jnp.cos(a_C), jnp.sin(a_C)], axis=-1)
        return jnp.linalg.norm(p_Bx2[:, None, :] - e_Cx2[None, :, :], axis=-1)

    to_ends = jnp.minimum(endpoint(consts.starts_C), endpoint(consts.starts_C + consts.spans_C))
    return jnp.where(on_arc, jnp.abs(r_BxC - consts.radii_C[None, :]), to_ends)


# --- the task interface of the sweeps (Spec + hparams) ------------------------------------------

SPLITS = ("id",)
CONSTANTS, TRAIN_STREAM, EVAL_ID = range(3)


def dim_choices(max_dim: int) -> tuple[int, ...]:
    """Intrinsic dimensions 1, 2, 4, ... up to `max_dim` (in equal shares)."""
    return tuple(2 ** i for i in range(max_dim.bit_length()) if 2 ** i <= max_dim)


def constants(run_key: jax.Array, spec, hparams: dict) -> SubspaceConstants | ManifoldConstants:
    """The run's ground truth from its key and `task.geometry`."""
    t = spec.task
    key, noise = jax.random.fold_in(run_key, CONSTANTS), hparams["task"]["noise_std"]
    if t.geometry == "subspaces":
        return subspace_constants(key, t.num_concepts, t.dim, dim_choices(t.max_concept_dim),
                                  centre_norm=hparams["task"]["concept_offset"], noise_std=noise)
    if t.geometry == "moons":
        return moons_constants(key, t.dim, noise_std=noise)
    return circles_constants(key, t.num_concepts, t.dim, noise_std=noise)


def sample(key: jax.Array, consts, spec, hparams: dict, batch_size: int,
           split: str = "id") -> Batch:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    return draw(key, consts, batch_size)


def train_batch(consts, run_key: jax.Array, step: jax.Array, spec, hparams: dict) -> Batch:
    key = jax.random.fold_in(jax.random.fold_in(run_key, TRAIN_STREAM), step)
    return draw(key, consts, spec.train.batch_size)


def eval_batch(consts, run_key: jax.Array, spec, hparams: dict, split: str) -> Batch:
    return sample(jax.random.fold_in(run_key, EVAL_ID), consts, spec, hparams,
                  spec.train.eval_batch_size, split)


def num_concepts(spec) -> int:
    return 2 if spec.task.geometry == "moons" else spec.task.num_concepts
