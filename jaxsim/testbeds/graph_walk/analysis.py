"""`jaxsim analyze DIR` for graph_walk: accuracy, Dirichlet energy and PCA of in-context
representations, per run and saved checkpoint (the compiled part in `analysis.graph`).

analysis.json:
    {"task", "graph", "graph_size", "adjacency": [N][N], "layout": [N][2], "sites": [..],
     "window", "context_lengths": [G], "num_sequences", "normalisation",
     "energy_min" (2 lambda_2), "energy_random_expected" (2 tr L / (N - 1)),
     "edge_coverage": [T] (share of the current node's edges the walk has taken so far),
     "runs": [{"run_id", "seed", "axes", "steps": [S],
               "accuracy", "accuracy_conflict", "prior_conflict": [S][T] (T = context - 1;
               position t has seen t + 1 tokens), "energy": [S][sites][G],
               "energy_random", "energy_prev_mix" (Gaussian node vectors plus the previous
               position's: the smoothness of copying the previous token), "coverage": [G],
               "explained": [sites][G][2], "layout_r2": [sites][G] (final checkpoint, mean over
               the PCA sequences), "layout_r2_random", "layout_r2_prev_mix": [G] (Gaussian
               means; the previous-token-mixing reference on the same walks)}, ...]}
analysis_graph.npz: run_id [R], steps [R] (the final checkpoint), context_lengths [G],
    means [R, sites, G, Q, N, D], counts [R, G, Q, N], pcs [R, sites, G, Q, N, 2] (NaN = node
    absent from the window), layout [N, 2], adjacency [N, N].
"""
from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import results
from jaxsim.testbeds.graph_walk import GRAPH
from jaxsim.testbeds.graph_walk import representations as graph
from jaxsim.analysis.driver import map_runs
from jaxsim.analysis.checkpoints import chunks, group_specs, run_entry, tolist
from jaxsim.config import ConfigError
from jaxsim.testbeds.graph_walk import task as gw

PCA_SEQUENCES = 4


def _nanmean(x, axis=None):
    """np.nanmean without the warning on all-NaN slices (too short a window: NaN is the answer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _pca(means_SxGxQxNxD: np.ndarray, counts_GxQxN: np.ndarray, layout_Nx2: np.ndarray):
    sites, lengths, seqs = means_SxGxQxNxD.shape[:3]
    pcs = np.full(means_SxGxQxNxD.shape[:-1] + (2,), np.nan)
    explained = np.full((sites, lengths, seqs, 2), np.nan)
    r2 = np.full((sites, lengths, seqs), np.nan)
    for s in range(sites):
        for g in range(lengths):
            for q in range(seqs):
                pcs[s, g, q], explained[s, g, q] = graph.pca2(means_SxGxQxNxD[s, g, q],
                                                              counts_GxQxN[g, q] > 0)
                r2[s, g, q] = graph.layout_r2(pcs[s, g, q], layout_Nx2)
    return pcs, _nanmean(explained, 2), _nanmean(r2, 2)


def _random_r2(counts_GxQxN: np.ndarray, layout_Nx2: np.ndarray, dim: int, seed: int):
    """[G] layout R^2 of PC1/PC2 of i.i.d. Gaussian embeddings on the same windows."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(counts_GxQxN.shape[0]):
        vals = []
        for q in range(counts_GxQxN.shape[1]):
            for _ in range(8):
                pcs, _ = graph.pca2(rng.normal(size=(len(layout_Nx2), dim)), counts_GxQxN[g, q] > 0)
                vals.append(graph.layout_r2(pcs, layout_Nx2))
        out.append(_nanmean(vals))
    return np.array(out)


def analyze_graph(out: Path, cfg, rows, num_sequences: int, lengths: list[int] | None,
                  window: int = graph.WINDOW) -> dict:
    specs, _ = group_specs(out, rows)
    trained = min(s.task.context_length for s in specs.values())
    lengths = lengths or graph.context_lengths(trained)
    bad = [v for v in lengths if not 1 <= v <= trained - 1]
    if bad:
        raise ConfigError(f"--context-lengths {bad} out of range: allowed 1..{trained - 1} "
                          f"(the trained context minus one)")
    ends = jnp.asarray(np.array(lengths) - 1, jnp.int32)
    adj = gw.adjacency(cfg.task.graph, cfg.task.graph_size)
    xy = gw.layout(cfg.task.graph, cfg.task.graph_size)
    refs = graph.laplacian_references(adj)
    keep = min(PCA_SEQUENCES, num_sequences)
    report, saved = [], []
    reference = None
    for chunk in chunks(out, rows):
        m = jax.device_get(map_runs(graph.analyze_run, chunk, ends, window, num_sequences))
        fm = jax.device_get(map_runs(graph.final_means, chunk, ends, window, num_sequences, keep,
                                     last=True))
        if reference is None:
            hp0 = jax.tree.map(lambda a: a[0], chunk.hparams_R)
            fresh, _ = graph.analysis_batches(jax.random.key(int(chunk.seeds_R[0])), chunk.spec,
                                              hp0, num_sequences)
            reference = graph.edge_coverage(np.asarray(fresh.nodes_BxL), adj)
        for i, run in enumerate(chunk.runs):
            pcs, explained, r2 = _pca(np.asarray(fm["means"][i]), np.asarray(fm["counts"][i]), xy)
            entry = run_entry(run, chunk.steps, chunk.rows[i])
            entry.update({k: tolist(v[i]) for k, v in m.items()})
            _, _, mix_r2 = _pca(np.asarray(fm["mix_means"][i])[None],
                                np.asarray(fm["counts"][i]), xy)
            entry.update(explained=tolist(explained), layout_r2=tolist(r2),
                         layout_r2_prev_mix=tolist(mix_r2[0]),
                         layout_r2_random=tolist(_random_r2(np.asarray(fm["counts"][i]), xy,
                                                            chunk.spec.model.d_model, run.seed)))
            report.append(entry)
            saved.append((run.run_id, chunk.steps[-1], np.asarray(fm["means"][i]),
                          np.asarray(fm["counts"][i]), pcs))
    report.sort(key=lambda e: e["run_id"])
    saved.sort(key=lambda t: t[0])

    def write(path: Path):
        with open(path, "wb") as f:
            np.savez(f, run_id=np.array([s[0] for s in saved]),
                     steps=np.array([s[1] for s in saved]), context_lengths=np.array(lengths),
                     means=np.stack([s[2] for s in saved]), counts=np.stack([s[3] for s in saved]),
                     pcs=np.stack([s[4] for s in saved]), layout=xy, adjacency=adj)

    results.atomic_write(out / GRAPH, write)
    return {"task": cfg.task.name, "graph": cfg.task.graph, "graph_size": cfg.task.graph_size,
            "adjacency": adj.tolist(), "layout": xy.tolist(),
            "sites": graph.sites(next(iter(specs.values()))), "window": window,
            "context_lengths": lengths, "num_sequences": num_sequences,
            "normalisation": graph.NORMALISATION, "energy_min": refs["energy_min"],
            "energy_random_expected": refs["energy_random"],
            "edge_coverage": tolist(reference), "runs": report}
