"""Matrix-completion diagnostics at saved checkpoints, and the baselines on the same matrices.

For one run and a stack of its checkpoints (pure, vmapped over runs by the caller, lax.map over
checkpoints), on `num_matrices` fixed analysis matrices of the run:
- copying vs completing: the output's squared distance from the input on observed entries, and
  on masked entries its distance from the truth and from the mean (0);
- attention per layer and head, averaged over matrices ([layers, heads, P, P]) and scored by the
  attention mass a query puts on the other entries of its own row and of its own column
  (uniform attention gives (n - 1) / n^2 each);
- linear probes of the hidden state after the embedding and after each layer for the row and the
  column index of a position: ridge regression onto one-hot targets (solved by conjugate
  gradients: no LAPACK call inside the vmapped program), trained on the first half of the
  matrices, accuracy on the second half.
Baselines: the copy solution (analytic plateau), nuclear-norm minimisation by soft-impute
(singular value thresholding, Mazumder et al. 2010) in jax, and for rank 1 the completion from
observed 2x2 minors (`rank1_minors`), all on the same analysis matrices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.testbeds.matrix_completion import task as mc
from jaxsim.config import Spec
from jaxsim.training import objectives
from jaxsim.training.loop import model_of

ANALYSIS_STREAM = 2000
PROBE_RIDGE = 1e-2


def analysis_batch(run_key: jax.Array, spec: Spec, hparams: dict, num_matrices: int):
    task = mc
    key = jax.random.fold_in(run_key, ANALYSIS_STREAM)
    return task.sample(key, task.constants(run_key, spec, hparams), spec, hparams, num_matrices)


def row_col_scores(attn_HxPxP: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """[H] mean attention mass on the query's own row and own column, itself excluded."""
    pos = jnp.arange(n * n)
    row, col = pos // n, pos % n
    other = pos[:, None] != pos[None, :]
    same_row = (row[:, None] == row[None, :]) & other
    same_col = (col[:, None] == col[None, :]) & other
    mass = lambda m: jnp.sum(attn_HxPxP * m[None].astype(attn_HxPxP.dtype), axis=-1).mean(-1)
    return mass(same_row), mass(same_col)


def ridge_probe_accuracy(h_BxPxC: jax.Array, labels_P: jax.Array, num_classes: int) -> jax.Array:
    """Held-out accuracy of a ridge probe (features + bias -> one-hot), half/half over matrices."""
    b, p, c = h_BxPxC.shape
    half = b // 2
    mean_C = h_BxPxC[:half].reshape(-1, c).mean(0)
    scale = h_BxPxC[:half].reshape(-1, c).std(0) + 1e-6

    def feats(h):
        z = ((h.reshape(-1, c) - mean_C[None]) / scale[None])
        return jnp.concatenate([z, jnp.ones((z.shape[0], 1), z.dtype)], axis=1)

    x_train, x_test = feats(h_BxPxC[:half]), feats(h_BxPxC[half:])
    y_P = jax.nn.one_hot(labels_P, num_classes)
    y_train = jnp.tile(y_P, (half, 1))
    gram = x_train.T @ x_train / x_train.shape[0] + PROBE_RIDGE * jnp.eye(c + 1)
    rhs = x_train.T @ y_train / x_train.shape[0]
    w, _ = jax.scipy.sparse.linalg.cg(lambda v: gram @ v, rhs, maxiter=4 * (c + 1))
    pred = jnp.argmax(x_test @ w, axis=-1)
    return jnp.mean(pred == jnp.tile(labels_P, b - half))


def analyze_run(params_S, run_key: jax.Array, spec: Spec, hparams: dict,
                num_matrices: int) -> dict[str, jax.Array]:
    """Diagnostics of S checkpoints of one run: [S] errors, [S, layers, heads] scores and mean
    attention maps, [S, layers + 1] probe accuracies."""
    n = spec.task.matrix_size
    batch = analysis_batch(run_key, spec, hparams, num_matrices)
    model = model_of(spec)
    observed = ~batch.masked_BxP
    pos = jnp.arange(n * n)

    def one_checkpoint(params):
        preds, acts = model.apply({"params": params}, batch.tokens_BxP, batch.values_BxP,
                                  return_activations=True)
        attn_LxHxPxP = jnp.stack([acts[f"attn{i}"].mean(0) for i in range(spec.model.num_layers)])
        rows, cols = jax.vmap(lambda a: row_col_scores(a, n))(attn_LxHxPxP)
        hidden = ["embed"] + [f"block{i}" for i in range(spec.model.num_layers)]
        probe_row = jnp.stack([ridge_probe_accuracy(acts[h], pos // n, n) for h in hidden])
        probe_col = jnp.stack([ridge_probe_accuracy(acts[h], pos % n, n) for h in hidden])
        return {
            "mse": objectives.masked_mse(preds, batch.values_BxP, jnp.ones_like(observed)),
            "observed_copy_error": objectives.masked_mse(preds, batch.values_BxP, observed),
            "masked_error": objectives.masked_mse(preds, batch.values_BxP, batch.masked_BxP),
            "masked_to_mean": objectives.masked_mse(preds, jnp.zeros_like(preds),
                                                    batch.masked_BxP),
            "row_score": rows, "col_score": cols, "attention": attn_LxHxPxP,
            "probe_row_acc": probe_row, "probe_col_acc": probe_col,
        }

    return jax.lax.map(one_checkpoint, params_S)


def soft_impute(values_BxNxN: jax.Array, observed_BxNxN: jax.Array, shrink: float,
                iters: int = 500) -> jax.Array:
    """Soft-impute: Z <- SVT_t(P_obs(X) + P_mask(Z)) (Mazumder, Hastie, Tibshirani 2010).

    A fixed point minimises 1/2 ||P_obs(Z - X)||_F^2 + t ||Z||_*; as t -> 0 it tends to the
    minimum-nuclear-norm completion that matches the observed entries. Warm-started continuation:
    t decays geometrically from 1 to `shrink` over the first 60% of the iterations, then stays."""
    decay_steps = max(1, int(0.6 * iters))
    rate = shrink ** (1.0 / decay_steps)

    def step(z, t):
        filled = jnp.where(observed_BxNxN, values_BxNxN, z)
        u, s, vt = jnp.linalg.svd(filled, full_matrices=False)
        s = jnp.maximum(s - jnp.maximum(rate ** t, shrink), 0.0)
        return jnp.einsum("bik,bk,bkj->bij", u, s, vt), None

    z, _ = jax.lax.scan(step, jnp.zeros_like(values_BxNxN), jnp.arange(iters, dtype=jnp.float32))
    return z


@jax.jit
def nuclear_norm_baseline(values_BxP: jax.Array, masked_BxP: jax.Array) -> dict[str, jax.Array]:
    """MSE (all / masked entries) of soft-impute with a small shrinkage, continuation-free."""
    b, p = values_BxP.shape
    n = int(round(p ** 0.5))
    x = values_BxP.reshape(b, n, n)
    obs = ~masked_BxP.reshape(b, n, n)
    z = soft_impute(x, obs, shrink=1e-3).reshape(b, p)
    return {"mse": jnp.mean((z - values_BxP) ** 2),
            "mse_masked": objectives.masked_mse(z, values_BxP, masked_BxP)}


def rank1_minors(values_BxNxN: jax.Array, observed_BxNxN: jax.Array) -> jax.Array:
    """Rank-1 completion of each entry from the observed 2x2 minors through it.

    For X = u v^T, X_ij = X_ik X_lj / X_lk whenever X_ik, X_lj and X_lk are observed (k != j,
    l != i). Every such minor of a masked entry is pooled by least squares weighted by its pivot's
    square, X_ij = sum X_ik X_lj X_lk / sum X_lk^2 (= A A^T A / O S^T O in matrix form, with
    A = observed values, S = observed squares, O = the observed indicator: a minor through a masked
    (i, j) never uses X_ij itself, since k = j or l = i would need it observed); an entry with no
    such minor gets the mean 0. Exact on noiseless rank-1 matrices where every masked entry has
    a minor; observed entries are returned as given."""
    obs = observed_BxNxN.astype(values_BxNxN.dtype)
    a = values_BxNxN * obs
    num = a @ jnp.swapaxes(a, 1, 2) @ a
    den = obs @ jnp.swapaxes(a * values_BxNxN, 1, 2) @ obs
    pred = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    return jnp.where(observed_BxNxN, values_BxNxN, pred)


@jax.jit
def rank1_minors_baseline(values_BxP: jax.Array, masked_BxP: jax.Array) -> dict[str, jax.Array]:
    """MSE (all / masked entries) of `rank1_minors` (meaningful for rank-1 matrices)."""
    b, p = values_BxP.shape
    n = int(round(p ** 0.5))
    z = rank1_minors(values_BxP.reshape(b, n, n), ~masked_BxP.reshape(b, n, n)).reshape(b, p)
    return {"mse": jnp.mean((z - values_BxP) ** 2),
            "mse_masked": objectives.masked_mse(z, values_BxP, masked_BxP)}
