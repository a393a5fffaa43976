"""Geometry of entity representations on the host (numpy/scipy, no sklearn): PCA, a small
Isomap, and how well each cycle's positions are a ring in the representation: linearly
(`ring_r2`, an ellipse) and as a neighbourhood graph (`ring_neighbours`, what Isomap sees).

Shapes: N entities, D representation width, C cycles.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path


def pca2(x_NxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([N, 2] the centred points on their top two principal axes, [2] explained variance
    shares)."""
    x = np.asarray(x_NxD, np.float64)
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    total = max(float((s ** 2).sum()), 1e-30)
    return x @ vt[:2].T, (s[:2] ** 2) / total


def classical_mds(dist_NxN: np.ndarray, dim: int = 2) -> np.ndarray:
    """[N, dim] points whose Euclidean distances best match `dist_NxN` (Torgerson scaling)."""
    n = len(dist_NxN)
    centre = np.eye(n) - 1.0 / n
    gram = -0.5 * centre @ (dist_NxN ** 2) @ centre
    vals, vecs = np.linalg.eigh(gram)
    top = np.argsort(vals)[::-1][:dim]
    return vecs[:, top] * np.sqrt(np.maximum(vals[top], 0.0))


def isomap2(x_NxD: np.ndarray, neighbours: int = 8) -> np.ndarray:
    """[N, 2] Isomap (Tenenbaum et al. 2000): geodesic distances along the symmetrised
    `neighbours`-nearest-neighbour graph, then classical MDS. Points in another component of the
    graph than a pair's partner get the largest finite geodesic distance times 1.5."""
    x = np.asarray(x_NxD, np.float64)
    n = len(x)
    k = min(neighbours, n - 1)
    sq = np.maximum((x ** 2).sum(1)[:, None] + (x ** 2).sum(1)[None] - 2 * x @ x.T, 0.0)
    dist = np.sqrt(sq)
    nearest = np.argsort(dist + np.diag(np.full(n, np.inf)), axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    graph = csr_matrix((dist[rows, nearest.ravel()], (rows, nearest.ravel())), shape=(n, n))
    geo = shortest_path(graph.maximum(graph.T), directed=False)
    finite = np.isfinite(geo)
    geo[~finite] = 1.5 * geo[finite].max()
    return classical_mds(geo)


def ring_r2(x_NxD: np.ndarray, position_CxN: np.ndarray) -> np.ndarray:
    """[C] how well (cos, sin)(2 pi position / N) on each cycle predicts the representations
    linearly, cross-validated: the least-squares fit on the even entities scores the odd ones
    and vice versa, R^2 = 1 - residual / total variance of the scored half, averaged over the
    two halves. 1 = the entities lie on an ellipse ordered by the cycle; about 0 (or below)
    for representations unrelated to it (an in-sample fit would score ~2 / (N - 1) by chance)."""
    x = np.asarray(x_NxD, np.float64)
    n = x.shape[0]
    folds = np.arange(n) % 2 == 0
    out = []
    for pos in np.asarray(position_CxN):
        angle = 2 * np.pi * pos / n
        basis = np.stack([np.ones(n), np.cos(angle), np.sin(angle)], 1)
        scores = []
        for fit in (folds, ~folds):
            coef, *_ = np.linalg.lstsq(basis[fit], x[fit], rcond=None)
            rest = x[~fit]
            resid = ((rest - basis[~fit] @ coef) ** 2).sum()
            scores.append(1.0 - resid / max(float(((rest - rest.mean(0)) ** 2).sum()), 1e-30))
        out.append(float(np.mean(scores)))
    return np.array(out)


def ring_neighbours(x_NxD: np.ndarray, position_CxN: np.ndarray, k: int = 4, within: int = 2
                    ) -> np.ndarray:
    """[C] the share of each entity's `k` nearest neighbours in the representation (Euclidean)
    that sit within `within` positions of it on cycle c (cyclically), averaged over entities.
    1 = every entity's nearest neighbours are its cycle neighbours (the neighbourhood graph
    Isomap draws is the cycle, whatever the curve's shape or the variance of other directions);
    unrelated points score about 2 within / (N - 1) (`ring_neighbours_chance`)."""
    x = np.asarray(x_NxD, np.float64)
    n = x.shape[0]
    k = min(k, n - 1)
    dist = pairwise_distances(x) + np.diag(np.full(n, np.inf))
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
    out = []
    for pos in np.asarray(position_CxN):
        gap = np.abs(pos[nearest] - pos[:, None])
        out.append(float((np.minimum(gap, n - gap) <= within).mean()))
    return np.array(out)


def ring_neighbours_chance(n: int, within: int = 2) -> float:
    """The expected `ring_neighbours` of points unrelated to the cycle."""
    return min(2 * within, n - 1) / (n - 1)


def pairwise_distances(x_NxD: np.ndarray) -> np.ndarray:
    """[N, N] Euclidean distances (the D of the shattering measure)."""
    x = np.asarray(x_NxD, np.float64)
    return np.sqrt(np.maximum(((x[:, None] - x[None]) ** 2).sum(-1), 0.0))
