"""Structured identity mapping (SIM; Yang, Park, Lubana, Okawa, Hu, Tanaka, ICLR 2025).

s Gaussian clusters in R^d: cluster p has mean mu_p e_p and noise N(0, Sigma) with
Sigma = diag(sigma_1^2, ..., sigma_s^2, 0, ..., 0) (noise only on the concept coordinates,
shared by every cluster). The target is the input: the model learns the identity on the span of
the data. mu_p = concept_mean + (p - 1) concept_mean_step, sigma_p likewise from
concept_noise(_step), so (1, 2), (2, 2), (3, 2) or (1, 2, 3, 4) are two scalars each (vmappable).

Training is online SGD on the population: every step draws a fresh batch whose sample b comes
from cluster b mod s (balanced clusters, as with n samples per cluster). With `task.rotate`, a
random orthogonal matrix R (Stewart's product of Householder reflections from the run key: only
matmuls, no QR inside the vmapped program) maps concept coordinates z to inputs x = R z.

The evaluation batch is a fixed held-out sample followed by the 2^s probes: the partial
compositions x^(v) = R sum_p v_p mu_p e_p for v in {0, 1}^s (v = 1...1 is the OOD point,
the one-hot v are the cluster centres, v = 0 the origin).

Shapes in names: B batch, D = d, S = s, V = 2^s probes.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim.config import Spec

ROTATION, TRAIN_STREAM, EVAL_ID, SIGNS = range(4)
SPLITS = ("id",)


class Batch(NamedTuple):
    x_BxD: jax.Array           # inputs (= targets), rotated
    z_BxD: jax.Array           # the same points in concept coordinates (R^T x)
    cluster_B: jax.Array       # int32 cluster of each sample
    probes_VxD: jax.Array      # rotated partial compositions ([0, D] in a training batch)
    probe_bits_VxS: jax.Array  # v of each probe ([0, S] in a training batch)
    rotation_DxD: jax.Array    # R: x = R z
    means_S: jax.Array         # mu_p
    noises_S: jax.Array        # sigma_p


def vocab_size(spec: Spec) -> int:
    """The models' output width: d (the target is the input)."""
    return spec.task.dim


def seq_len(spec: Spec) -> int:
    return 1


def concept_params(hparams: dict, num_concepts: int) -> tuple[jax.Array, jax.Array]:
    """(mu_S, sigma_S): arithmetic progressions from the four scalar task hparams."""
    hp = hparams["task"]
    p = jnp.arange(num_concepts, dtype=jnp.float32)
    return (hp["concept_mean"] + p * hp["concept_mean_step"],
            hp["concept_noise"] + p * hp["concept_noise_step"])


def means_noises(task_hparams: dict, num_concepts: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu [S], sigma [S]) of a run from its task hyperparameters."""
    p = np.arange(num_concepts)
    hp = task_hparams
    return (hp["concept_mean"] + p * hp["concept_mean_step"],
            hp["concept_noise"] + p * hp["concept_noise_step"])


def concept_signal(means_S, noises_S) -> np.ndarray | jax.Array:
    """a_p = mu_p^2 / s + sigma_p^2: the diagonal of the population second moment E[z z^T]."""
    return means_S ** 2 / means_S.shape[-1] + noises_S ** 2


def random_orthogonal(key: jax.Array, dim: int) -> jax.Array:
    """[D, D] Haar-random orthogonal matrix (Stewart 1980): H_1 ... H_{D-1} diag(+-1), H_k the
    reflection mapping e_k to the direction of a standard normal vector g_k supported on
    coordinates k..D (v_k = g_k + sign(g_kk) |g_k| e_k). Matmuls only: no QR in the program."""
    gauss_DxD = jax.random.normal(jax.random.fold_in(key, 0), (dim, dim))
    gauss_DxD = gauss_DxD * (jnp.arange(dim)[None, :] >= jnp.arange(dim)[:, None])
    diag_D = jnp.diagonal(gauss_DxD)
    norms_D = jnp.sqrt(jnp.sum(gauss_DxD ** 2, axis=1))
    vecs_DxD = gauss_DxD + jnp.diag(jnp.where(diag_D >= 0, 1.0, -1.0) * norms_D)

    def reflect(q_DxD, v_D):
        v_D = v_D / jnp.maximum(jnp.sqrt(jnp.sum(v_D * v_D)), 1e-12)
        return q_DxD - 2.0 * jnp.outer(q_DxD @ v_D, v_D), None

    q_DxD, _ = jax.lax.scan(reflect, jnp.eye(dim), vecs_DxD[:-1])
    signs_D = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, SIGNS), 0.5, (dim,)), 1., -1.)
    return q_DxD * signs_D[None, :]


def constants(run_key: jax.Array, spec: Spec, hparams: dict) -> tuple:
    """(R [D, D], mu [S], sigma [S]) of the run; R = I without `task.rotate`."""
    dim = spec.task.dim
    rot = (random_orthogonal(jax.random.fold_in(run_key, ROTATION), dim) if spec.task.rotate
           else jnp.eye(dim))
    return (rot,) + concept_params(hparams, spec.task.num_concepts)


def composition_bits(num_concepts: int) -> np.ndarray:
    """[2^S, S] every v in {0, 1}^S, v's index = sum_p v_p 2^(S - 1 - p) (1...1 last)."""
    index = np.arange(2 ** num_concepts)[:, None]
    return ((index >> np.arange(num_concepts - 1, -1, -1)[None, :]) & 1).astype(np.float32)


def embed(z_BxS: jax.Array, dim: int) -> jax.Array:
    """Concept coordinates [.., S] -> points [.., D] (zeros past s)."""
    return jnp.pad(z_BxS, ((0, 0), (0, dim - z_BxS.shape[1])))


def sample(key: jax.Array, consts: tuple, spec: Spec, batch_size: int,
           probes: bool = False) -> Batch:
    """`batch_size` points, sample b from cluster b mod s; with `probes`, the 2^s compositions."""
    rot_DxD, means_S, noises_S = consts
    s, dim = spec.task.num_concepts, spec.task.dim
    cluster_B = jnp.arange(batch_size, dtype=jnp.int32) % s
    onehot_BxS = jax.nn.one_hot(cluster_B, s, dtype=jnp.float32)
    noise_BxS = jax.random.normal(key, (batch_size, s)) * noises_S[None, :]
    z_BxD = embed(onehot_BxS * means_S[None, :] + noise_BxS, dim)
    bits_VxS = jnp.asarray(composition_bits(s) if probes else np.zeros((0, s), np.float32))
    probes_VxD = embed(bits_VxS * means_S[None, :], dim) @ rot_DxD.T
    return Batch(z_BxD @ rot_DxD.T, z_BxD, cluster_B, probes_VxD, bits_VxS, rot_DxD,
                 means_S, noises_S)


def train_batch(consts: tuple, run_key: jax.Array, step: jax.Array, spec: Spec,
                hparams: dict) -> Batch:
    key = jax.random.fold_in(jax.random.fold_in(run_key, TRAIN_STREAM), step)
    return sample(key, consts, spec, spec.train.batch_size)


def eval_batch(consts: tuple, run_key: jax.Array, spec: Spec, hparams: dict, split: str) -> Batch:
    """The fixed held-out sample (the same at every evaluation) plus the 2^s probes."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    return sample(jax.random.fold_in(run_key, EVAL_ID), consts, spec,
                  spec.train.eval_batch_size, probes=True)
