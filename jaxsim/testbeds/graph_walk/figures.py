"""Graph-tracing figures (task graph_walk), drawn from saved files only.

- figures/graph_curves.png: held-out loss (oracle dashed, one per run where they differ) and
  neighbour-mass accuracy over training, one line per run (colour, line style, marker: one
  swept axis each; seeds share a style; the key beside the panels); when some run pretrains on
  a fixed map, a third panel: the conflict split's mass on the context graph (bold) and on the
  pretraining map (thin).
After `jaxsim analyze`:
- figures/graph_accuracy.png: accuracy against context length (log x) at the final checkpoint,
  with the share of the current node's edges the walk has revealed; the best run's curve at
  every saved checkpoint (colour = step, with its colour bar; the title names the run's axis
  values); and, when a run pretrains on a fixed map, the conflict split's mass on the context
  graph's and on the pretraining map's neighbours.
- figures/graph_energy.png: normalised Dirichlet energy of the class means, one column per
  residual site, divided by the energy of i.i.d. Gaussian means on the same windows (so 1 =
  random; the raw energy grows with the nodes a window covers), with the spectral minimum
  2 lambda_2 / (2 tr L / (N - 1)): against context length at the final checkpoint (top) and at
  the longest context against training step (bottom), accuracy on the right axes.
- figures/graph_pca.png: PC1/PC2 of one sequence's class means at a short and a long context
  for each site, the graph's edges drawn between them, nodes coloured by their place in the
  layout, with the layout itself drawn in the same colours as the colour key.

A diverged run (runs.csv status) is not drawn: its curves are NaN, the analysis figures leave
it out, and each figure's title names it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from jaxsim import config as cfglib  # noqa: E402
from jaxsim import results
from jaxsim.testbeds.graph_walk import GRAPH  # noqa: E402
from jaxsim.plotting import (diverged, diverged_note, drawable_analysis,  # noqa: E402
                             log_scale, save)
from jaxsim.plotting import label as axis_label  # noqa: E402
from jaxsim.plotting.styles import (differs, outside, row_mean, run_styles,  # noqa: E402
                                    run_title, wrap_title)
from jaxsim.testbeds.graph_walk import LABELS  # noqa: E402


def _label(key: str) -> str:
    return axis_label(key, LABELS)


def _pretrains(out: Path, rows: list[dict]) -> bool:
    """Whether some run trains on the fixed map (its config value or its axis column)."""
    base = cfglib.load(Path(out) / results.CONFIG).task.pretrain_frac
    return any(float(r.get("task.pretrain_frac", base)) > 0 for r in rows)


def _neighbour(metrics: dict, split: str):
    """The neighbour-mass metric (named neighbor_acc_* in results written before the rename)."""
    return metrics.get(f"neighbour_acc_{split}", metrics.get(f"neighbor_acc_{split}"))


def curves(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path:
    """Loss (oracle dashed: one per run where they differ) and neighbour mass; with a fixed
    map, the conflict split's mass on the context graph (the run's style) and on the
    pretraining map (its colour, thin and faint)."""
    steps = metrics["step"]
    looks = run_styles(rows, axes, LABELS)
    pretrain = "prior_acc_conflict" in metrics and _pretrains(out, rows)
    fig, panels = plt.subplots(1, 3 if pretrain else 2, figsize=(16 if pretrain else 11, 4.2))
    oracle_R = row_mean(metrics["oracle_loss_id"])
    for r in range(len(rows)):
        look = looks.styles[r]
        panels[0].plot(steps, metrics["eval_loss_id"][r], **look)
        panels[1].plot(steps, _neighbour(metrics, "id")[r], **look)
        if differs(oracle_R):
            panels[0].axhline(oracle_R[r], color=look["color"], ls=(0, (2, 2)), lw=0.8)
        if pretrain:
            panels[2].plot(steps, _neighbour(metrics, "conflict")[r], **look)
            panels[2].plot(steps, metrics["prior_acc_conflict"][r], color=look["color"],
                           lw=0.8, alpha=0.5)
    if not differs(oracle_R):
        panels[0].axhline(np.nanmean(oracle_R), color="k", ls=(0, (2, 2)), lw=1)
    panels[0].set_ylabel("next-token cross-entropy (nats)")
    panels[1].set_ylabel("probability on valid neighbours")
    panels[1].set_title("neighbour mass, mean over positions (id split)", fontsize=10)
    note = diverged_note(diverged(rows))
    panels[0].set_title("held-out loss, id split (dashed: oracle"
                        + (", each run's own)" if differs(oracle_R) else ")")
                        + (f"\n{note}" if note else ""), fontsize=10)
    if pretrain:
        panels[2].set_title("conflict split: mass on the context graph (bold)\nand on the "
                            "pretraining map (thin, faint)", fontsize=10)
    for p in panels:
        p.set_xlabel("training step")
        p.grid(alpha=0.3)
    outside(panels[-1], handles=looks.handles)
    return save(fig, out, "graph_curves.png")


def accuracy(out: Path, doc: dict, axes: list[str], rows: list[dict]) -> Path:
    """Final accuracy against context length per run (its style); the best run over training
    (colour = step, with a colour bar); the conflict split when some run pretrains."""
    from matplotlib.colors import LogNorm
    t = np.arange(1, len(doc["edge_coverage"]) + 1)
    looks = run_styles(rows, axes, LABELS)
    order = {int(r["run_id"]): i for i, r in enumerate(rows)}
    pretrain = _pretrains(out, rows)
    fig, panels = plt.subplots(1, 3 if pretrain else 2, figsize=(17 if pretrain else 12, 4.2),
                               sharey=True)
    for run in doc["runs"]:
        panels[0].plot(t, np.array(run["accuracy"][-1], float),
                       **looks.styles[order[run["run_id"]]])
    coverage, = panels[0].plot(t, doc["edge_coverage"], color="gray", ls="--", lw=1,
                               label="share of the node's edges seen")
    panels[0].set_title("final checkpoint, every run", fontsize=10)
    run = max(doc["runs"], key=lambda r: np.nanmean(np.array(r["accuracy"][-1], float)))
    steps = np.maximum(np.array(run["steps"], float), 1)
    norm = LogNorm(steps[0], max(steps[-1], steps[0] * 1.01))
    for s, step in enumerate(steps):
        panels[1].plot(t, np.array(run["accuracy"][s], float), color=plt.cm.magma(
            0.1 + 0.75 * norm(step)), lw=1.2)
    shades = plt.cm.ScalarMappable(norm=norm, cmap=_shifted_magma())
    fig.colorbar(shades, ax=panels[1], label="training step", pad=0.01)
    panels[1].set_title(wrap_title(run_title(rows[order[run["run_id"]]], axes, LABELS))
                        + ", over training", fontsize=9)
    if pretrain:
        for run in doc["runs"]:
            look = looks.styles[order[run["run_id"]]]
            panels[2].plot(t, np.array(run["accuracy_conflict"][-1], float), **look)
            panels[2].plot(t, np.array(run["prior_conflict"][-1], float), color=look["color"],
                           lw=0.8, alpha=0.5)
        panels[2].set_title("conflict split: context graph (bold), pretraining map (thin)",
                            fontsize=10)
    panels[0].set_ylabel("probability on valid neighbours")
    for p in panels:
        log_scale(p, x=True)
        p.set_xlabel("context length (tokens seen)")
        p.grid(alpha=0.3)
    outside(panels[-1], handles=[*looks.handles, coverage],
            bbox_to_anchor=(1.25 if not pretrain else 1.02, 1.0))
    _note(fig, doc)
    return save(fig, out, "graph_accuracy.png", rect=(0, 0, 1, 0.94) if doc["diverged"]
                else (0, 0, 1, 1))


def _shifted_magma():
    """magma from 0.1 to 0.85, the range the over-training curves use."""
    from matplotlib.colors import ListedColormap
    return ListedColormap(plt.cm.magma(np.linspace(0.1, 0.85, 256)))


def _note(fig, doc: dict, title: str = "") -> None:
    """The figure's title, followed by the diverged runs left out when there are any."""
    parts = [t for t in (title, diverged_note(doc["diverged"])) if t]
    if parts:
        fig.suptitle("; ".join(parts), fontsize=9)


def _run_label(run: dict) -> str:
    """'run 3: positions = rope, seed 0' (its varying axis values by name)."""
    values = [f"{_label(k)} = {v}" for k, v in run["axes"].items()]
    return f"run {run['run_id']}: " + ", ".join([*values, f"seed {run['seed']}"])


def energy(out: Path, doc: dict) -> Path:
    """Top row: energy ratio against context length (final checkpoint; dotted: the
    previous-token-mixing reference of `analysis.graph.previous_token_mix`); bottom row: at the
    longest context against training step, with that context's accuracy (dashed, right axis)."""
    lengths = np.array(doc["context_lengths"])
    sites = doc["sites"]
    colours = {r["run_id"]: plt.cm.tab10(i % 10) for i, r in enumerate(doc["runs"])}
    fig, panels = plt.subplots(2, len(sites), figsize=(4.2 * len(sites), 7.6), squeeze=False)
    for k, site in enumerate(sites):
        top, bottom = panels[0, k], panels[1, k]
        twin_top, twin_bottom = top.twinx(), bottom.twinx()
        for r in doc["runs"]:
            rand = np.array(r["energy_random"], float)
            ratio_SxG = np.array(r["energy"], float)[:, k] / rand[None]
            c = colours[r["run_id"]]
            top.plot(lengths, ratio_SxG[-1], "o-", ms=3, color=c, label=_run_label(r))
            if "energy_prev_mix" in r:                 # absent from older analysis.json files
                keyed = k == len(sites) - 1 and r is doc["runs"][0]     # once, in the key
                top.plot(lengths, np.array(r["energy_prev_mix"], float) / rand, ":", color=c,
                         lw=1.2, label="previous-token mixing (no model)" if keyed else None)
            bottom.plot(r["steps"], ratio_SxG[:, -1], "o-", ms=3, color=c, label=_run_label(r))
            acc = np.array(r["accuracy"], float)
            twin_top.plot(np.arange(1, acc.shape[1] + 1), acc[-1], color=c, lw=0.8, alpha=0.35)
            twin_bottom.plot(r["steps"], acc[:, lengths[-1] - 1], color=c, ls="--", lw=1)
        for panel in (top, bottom):
            panel.axhline(1.0, color="gray", ls="--", lw=1, label="random embedding")
            panel.axhline(doc["energy_min"] / doc["energy_random_expected"], color="k", ls=":",
                          label="minimum (spectral embedding)")
            panel.grid(alpha=0.3)
        for twin in (twin_top, twin_bottom):
            twin.set_ylim(0, 1)
            twin.tick_params(axis="y", labelsize=7)
        log_scale(top, x=True)
        top.set_title(f"site {site}: final checkpoint", fontsize=10)
        top.set_xlabel("context length (faint, right axis: accuracy)")
        log_scale(bottom, x=True)
        bottom.xaxis.set_minor_formatter(NullFormatter())     # labels at the decades only
        bottom.set_title(f"site {site}: context {lengths[-1]} over training", fontsize=10)
        bottom.set_xlabel("training step (dashed, right axis: accuracy)")
    for row in panels:
        row[0].set_ylabel("Dirichlet energy / random embedding's")
    outside(panels[0, -1], bbox_to_anchor=(1.12, 1.0))
    _note(fig, doc, f"normalised Dirichlet energy of the class means over the last "
                    f"{doc['window']} tokens, relative to i.i.d. Gaussian means on the same "
                    f"windows")
    return save(fig, out, "graph_energy.png", rect=(0, 0, 1, 0.96))


def pca(out: Path, doc: dict) -> Path:
    with np.load(out / GRAPH) as f:
        pcs, run_ids, lengths = f["pcs"], f["run_id"], f["context_lengths"]
        adj, xy = f["adjacency"], f["layout"]
    run = max(doc["runs"], key=lambda r: np.nanmean(np.array(r["accuracy"][-1], float)))
    i = int(np.flatnonzero(run_ids == run["run_id"])[0])
    picks = [int(np.searchsorted(lengths, min(16, lengths[-1]))), len(lengths) - 1]
    sites = doc["sites"]
    span = (xy - xy.min(0)) / np.maximum(np.ptp(xy, 0), 1e-9)
    colours = np.stack([span[:, 0], 0.3 + 0 * span[:, 0], span[:, 1]], 1) * 0.9
    fig, panels = plt.subplots(len(picks), len(sites), figsize=(3.6 * len(sites), 3.4 * len(picks)),
                               squeeze=False)
    for row, g in enumerate(picks):
        for col, site in enumerate(sites):
            ax = panels[row, col]
            c = pcs[i, col, g, 0]
            for a, b in zip(*np.nonzero(np.triu(adj))):
                if np.isfinite(c[[a, b]]).all():
                    ax.plot(c[[a, b], 0], c[[a, b], 1], color="0.6", lw=1, zorder=1)
            ok = np.isfinite(c).all(1)
            ax.scatter(c[ok, 0], c[ok, 1], c=colours[ok], s=40, zorder=2)
            r2 = run["layout_r2"][col][g]
            ax.set_title(f"{site}, context {lengths[g]}: layout R² "
                         f"{'n/a' if r2 is None else f'{r2:.2f}'}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    panels[0, 0].set_ylabel("PC2")
    panels[-1, 0].set_xlabel("PC1")
    key = fig.add_axes([1.0, 0.35, 0.16, 0.16 * fig.get_figwidth() / fig.get_figheight()])
    _layout_key(key, xy, adj, colours, doc["graph"])
    _note(fig, doc, f"{_run_label(run)}, final checkpoint, one sequence: class means over the "
                    f"last {doc['window']} tokens, coloured by the node's place in the graph")
    return save(fig, out, "graph_pca.png", rect=(0, 0, 1, 0.95))


def _layout_key(ax, xy: np.ndarray, adj: np.ndarray, colours: np.ndarray, graph: str) -> None:
    """The colour key of the PCA panels: the graph drawn in its own layout, each node in the
    colour its class mean wears."""
    for a, b in zip(*np.nonzero(np.triu(adj))):
        ax.plot(xy[[a, b], 0], xy[[a, b], 1], color="0.7", lw=0.8, zorder=1)
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=28, zorder=2)
    ax.set_title(f"colour key:\nthe {graph} layout", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def draw(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> list[Path]:
    paths = [curves(out, axes, rows, metrics)]
    doc = drawable_analysis(out, "graph_walk")
    if doc is not None and doc["runs"]:     # some run that did not diverge was analysed
        paths += [accuracy(out, doc, axes, rows), energy(out, doc)]
        if (out / GRAPH).is_file():
            paths.append(pca(out, doc))
    return paths
