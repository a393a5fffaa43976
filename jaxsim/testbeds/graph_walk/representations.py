"""In-context representations of a graph (Park, Lee, Lubana et al. 2025), at saved checkpoints.

For one run and a stack of its checkpoints (pure, vmapped over runs by the caller, `lax.map`
over checkpoints), on `num_sequences` fixed analysis walks with fresh node -> token maps:
- accuracy per position = the model's next-token probability on the tokens of the current
  node's valid neighbours (and, on the `conflict` split, on the fixed map's neighbours);
- for each context length t of a grid and each residual-stream site, the class means of the
  site's activations per node over the last `window` positions (t - window, t] of each sequence;
- their normalised Dirichlet energy, per sequence (maps differ between sequences, so means are
  never pooled across them), then averaged over sequences:

      E(X) = sum_ij A_ij ||x_i - x_j||^2 / sum_i ||x_i - mean(x)||^2

  over the nodes present in the window (dividing by the total variance rules out the trivial
  collapsed minimiser and makes E independent of scale and width). Its minimum over all
  embeddings of the full graph is 2 lambda_2 (the Laplacian's smallest non-zero eigenvalue,
  reached by the low-frequency eigenvectors); an i.i.d. Gaussian embedding gives about
  2 tr(L) / (N - 1). The random reference is also computed on the same presence masks, and so
  is a previous-token-mixing one (`previous_token_mix`: Gaussian node vectors plus the previous
  position's), the smoothness that copying the previous token alone would give.
PCA of the final class means (numpy, on the host, after the compiled part) and the share of the
graph's drawing coordinates that PC1/PC2 explain linearly (`layout_r2`) live at the bottom.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim.config import Spec
from jaxsim.testbeds.graph_walk import task as gw
from jaxsim.training import objectives
from jaxsim.training.loop import model_of

ANALYSIS_STREAM, RANDOM_STREAM, MIX_STREAM = 3000, 3001, 3002
WINDOW = 50
NORMALISATION = ("centred over the nodes present in the window, divided by their total "
                 "variance sum_i ||x_i - mean||^2")


def sites(spec: Spec) -> list[str]:
    return ["embed"] + [f"block{i}" for i in range(spec.model.num_layers)]


def context_lengths(trained: int) -> list[int]:
    """~12 log-spaced context lengths from 2 to the trained context minus one."""
    top = trained - 1
    grid = np.unique(np.round(np.geomspace(2, top, 12)).astype(int))
    return [int(v) for v in grid]


def analysis_batches(run_key: jax.Array, spec: Spec, hparams: dict, num_sequences: int):
    """(fresh-map walks, conflict-split walks): fixed per run."""
    fresh_hp = {**hparams, "task": {**hparams["task"], "pretrain_frac": jnp.zeros(())}}
    consts = gw.constants(run_key, spec, hparams)
    key = jax.random.fold_in(run_key, ANALYSIS_STREAM)
    return (gw.sample(jax.random.fold_in(key, 0), consts, spec, fresh_hp, num_sequences, "id"),
            gw.sample(jax.random.fold_in(key, 1), consts, spec, hparams, num_sequences,
                      "conflict"))


def class_means(acts_BxTxD: jax.Array, nodes_BxT: jax.Array, ends_G: jax.Array, window: int,
                num_nodes: int) -> tuple[jax.Array, jax.Array]:
    """([B, G, N, D] per-node mean activation over positions (end - window, end], [B, G, N]
    counts); a node absent from a window has mean 0 and count 0."""
    pos_T = jnp.arange(acts_BxTxD.shape[1])
    inside_GxT = ((pos_T[None] <= ends_G[:, None]) & (pos_T[None] > ends_G[:, None] - window))
    onehot_BxTxN = jax.nn.one_hot(nodes_BxT, num_nodes, dtype=acts_BxTxD.dtype)
    weights_BxGxTxN = inside_GxT.astype(acts_BxTxD.dtype)[None, :, :, None] * onehot_BxTxN[:, None]
    counts_BxGxN = weights_BxGxTxN.sum(2)
    sums_BxGxNxD = jnp.einsum("bgtn,btd->bgnd", weights_BxGxTxN, acts_BxTxD)
    return sums_BxGxNxD / jnp.maximum(counts_BxGxN, 1.0)[..., None], counts_BxGxN


def dirichlet_energy(x_xNxD: jax.Array, present_xN: jax.Array, adj_NxN: jax.Array) -> jax.Array:
    """[...] sum_ij A_ij ||x_i - x_j||^2 / sum_i ||x_i - mean||^2 over the present nodes (NaN
    with fewer than 3 present)."""
    p = present_xN.astype(x_xNxD.dtype)
    mean = (p[..., None] * x_xNxD).sum(-2, keepdims=True) / jnp.maximum(
        p.sum(-1), 1.0)[..., None, None]
    xc = (x_xNxD - mean) * p[..., None]
    sq_xN = jnp.sum(xc * xc, -1)
    dist_xNxN = sq_xN[..., :, None] + sq_xN[..., None, :] - 2 * jnp.einsum("...id,...jd->...ij",
                                                                         xc, xc)
    adj = adj_NxN.astype(x_xNxD.dtype).reshape((1,) * (p.ndim - 1) + adj_NxN.shape)
    pair = adj * p[..., :, None] * p[..., None, :]
    energy = jnp.sum(pair * jnp.maximum(dist_xNxN, 0.0), (-2, -1)) / jnp.maximum(
        sq_xN.sum(-1), 1e-30)
    return jnp.where(p.sum(-1) >= 3, energy, jnp.nan)


def _position_mass(logits_BxTxK, probs_BxTxK):
    return objectives.probability_mass(logits_BxTxK, probs_BxTxK).mean(0)


def analyze_run(params_S, run_key: jax.Array, spec: Spec, hparams: dict, ends_G: jax.Array,
                window: int, num_sequences: int) -> dict[str, jax.Array]:
    """S checkpoints of one run: accuracy [S, T], accuracy/prior mass on the conflict split
    [S, T], energy [S, sites, G]; and, checkpoint-free, coverage [G] (mean share of nodes in the
    window) and the random-embedding and previous-token-mixing energies [G] on the same
    windows."""
    fresh, conflict = analysis_batches(run_key, spec, hparams, num_sequences)
    adj = jnp.asarray(gw.adjacency(spec.task.graph, spec.task.graph_size))
    n = adj.shape[0]
    model = model_of(spec)
    nodes = fresh.nodes_BxL[:, :-1]

    def one_checkpoint(params):
        logits, acts = model.apply({"params": params}, fresh.tokens_BxL[:, :-1],
                                   return_activations=True)
        logits_c = model.apply({"params": params}, conflict.tokens_BxL[:, :-1])
        energy = []
        for site in sites(spec):
            means, counts = class_means(acts[site], nodes, ends_G, window, n)
            energy.append(jnp.nanmean(dirichlet_energy(means, counts > 0, adj), axis=0))
        return {"accuracy": _position_mass(logits, fresh.next_probs_BxLxK[:, :-1]),
                "accuracy_conflict": _position_mass(logits_c, conflict.next_probs_BxLxK[:, :-1]),
                "prior_conflict": _position_mass(logits_c, conflict.prior_probs_BxLxK[:, :-1]),
                "energy": jnp.stack(energy)}

    out = jax.lax.map(one_checkpoint, params_S)
    _, counts = class_means(jnp.zeros(nodes.shape + (1,)), nodes, ends_G, window, n)
    noise = jax.random.normal(jax.random.fold_in(run_key, RANDOM_STREAM), counts.shape + (16,))
    out["coverage"] = (counts > 0).mean((0, 2))
    out["energy_random"] = jnp.nanmean(dirichlet_energy(noise, counts > 0, adj), axis=0)
    mixed = previous_token_mix(jax.random.fold_in(run_key, MIX_STREAM), nodes, n)
    means, _ = class_means(mixed, nodes, ends_G, window, n)
    out["energy_prev_mix"] = jnp.nanmean(dirichlet_energy(means, counts > 0, adj), axis=0)
    return out


def previous_token_mix(key: jax.Array, nodes_BxT: jax.Array, num_nodes: int,
                       dim: int = 16) -> jax.Array:
    """[B, T, dim] a model-free reference: every position holds a random Gaussian vector of its
    node plus one of the previous position's node (per sequence; position 0: its own node only),
    i.e. what one attention head that copies the previous token would add to a random token
    embedding. A node's class mean is its own vector plus the mean of its walk predecessors'
    (its neighbours'), so adjacent nodes share components and the means are smoother than
    i.i.d. ones on every graph, bipartite or not, with no inference of the graph (on 4x4 grid,
    hex and triangular lattices and 15/16-rings, 128-token walks: 0.6-0.7, 0.5, 0.7, 0.4 of the
    random energy)."""
    g_BxNxD = jax.random.normal(key, (nodes_BxT.shape[0], num_nodes, dim))
    x_BxTxD = jnp.take_along_axis(g_BxNxD, nodes_BxT[..., None], axis=1)
    prev_BxTxD = jnp.concatenate([jnp.zeros_like(x_BxTxD[:, :1]), x_BxTxD[:, :-1]], axis=1)
    return x_BxTxD + prev_BxTxD


def final_means(params, run_key: jax.Array, spec: Spec, hparams: dict, ends_G: jax.Array,
                window: int, num_sequences: int, keep: int) -> dict[str, jax.Array]:
    """Class means [sites, G, Q, N, D] and counts [G, Q, N] of the first `keep` analysis
    sequences at one checkpoint, and those of the previous-token-mixing reference [G, Q, N, D]
    (width D) on the same walks (for the PCA on the host)."""
    fresh, _ = analysis_batches(run_key, spec, hparams, num_sequences)
    n = gw.num_nodes(spec)
    tokens, nodes = fresh.tokens_BxL[:keep, :-1], fresh.nodes_BxL[:keep, :-1]
    _, acts = model_of(spec).apply({"params": params}, tokens, return_activations=True)
    means = [class_means(acts[s], nodes, ends_G, window, n) for s in sites(spec)]
    mixed = previous_token_mix(jax.random.fold_in(run_key, MIX_STREAM + 1), nodes, n,
                               spec.model.d_model)
    mix_means, _ = class_means(mixed, nodes, ends_G, window, n)
    return {"means": jnp.stack([jnp.swapaxes(m, 0, 1) for m, _ in means]),
            "counts": jnp.swapaxes(means[0][1], 0, 1),
            "mix_means": jnp.swapaxes(mix_means, 0, 1)}


# ---- host side (numpy) ----

def laplacian_references(adj_NxN: np.ndarray) -> dict:
    """The normalised energy's minimum 2 lambda_2, the i.i.d. embedding's 2 tr(L) / (N - 1),
    and the spectral embedding (the two lowest non-trivial Laplacian eigenvectors, [N, 2])."""
    lap = np.diag(adj_NxN.sum(1)) - adj_NxN
    vals, vecs = np.linalg.eigh(lap.astype(np.float64))
    return {"energy_min": float(2 * vals[1]),
            "energy_random": float(2 * np.trace(lap) / (len(adj_NxN) - 1)),
            "spectral": vecs[:, 1:3]}


def pca2(x_NxD: np.ndarray, present_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PC1/PC2 coordinates [N, 2] (NaN for absent nodes) and explained-variance ratios [2];
    all NaN when fewer than 3 nodes are present or the vectors are not finite (a diverged
    run's)."""
    coords = np.full((len(x_NxD), 2), np.nan)
    if present_N.sum() < 3 or not np.isfinite(x_NxD[present_N]).all():
        return coords, np.full(2, np.nan)
    xc = x_NxD[present_N] - x_NxD[present_N].mean(0)
    u, s, _ = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    coords[present_N] = u[:, :2] * s[:2]
    return coords, (s[:2] ** 2) / max((s ** 2).sum(), 1e-30)


def layout_r2(coords_Nx2: np.ndarray, layout_Nx2: np.ndarray) -> float:
    """Share of the variance of the graph's drawing coordinates that an affine map of PC1/PC2
    explains (least squares over the present nodes): 1 = the layout up to an affine map."""
    ok = np.isfinite(coords_Nx2).all(1)
    if ok.sum() < 4:
        return float("nan")
    design = np.concatenate([coords_Nx2[ok], np.ones((ok.sum(), 1))], axis=1)
    target = layout_Nx2[ok] - layout_Nx2[ok].mean(0)
    fit, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ fit
    return float(1 - (resid ** 2).sum() / max((target ** 2).sum(), 1e-30))


def edge_coverage(nodes_BxL: np.ndarray, adj_NxN: np.ndarray) -> np.ndarray:
    """[L - 1] mean share of the current node's edges that the walk has already taken (either
    way) up to and including the current step: how much of the local graph the context has
    revealed. The edge back to the previous node is always among them: a model that copies the
    previous token puts all its mass on a valid neighbour, so the neighbour-mass "accuracy" can
    be high without graph inference (cross-entropy training penalises that: the oracle spreads
    its mass uniformly over the neighbours)."""
    b, length = nodes_BxL.shape
    deg = adj_NxN.sum(1)
    cover = np.zeros((b, length - 1))
    for s in range(b):
        seen = np.zeros_like(adj_NxN, dtype=bool)
        for t in range(length - 1):
            cur = nodes_BxL[s, t]
            if t > 0:
                prev = nodes_BxL[s, t - 1]
                seen[cur, prev] = seen[prev, cur] = True
            cover[s, t] = seen[cur].sum() / deg[cur]
    return cover.mean(0)
