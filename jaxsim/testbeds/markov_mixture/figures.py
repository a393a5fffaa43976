"""markov_mixture figures, drawn from saved files only.

- figures/loss_curves.png: held-out loss (in-distribution and out-of-distribution) over
  training, one line per value of the leading axis (mean over seeds and other axes), with the
  oracle loss of the true chains dashed.
- figures/ood_gap_heatmap.png: final out-of-distribution loss minus oracle loss over the two
  leading axes; with a single axis, over that axis x training step.

From DIR/analysis.json (after `jaxsim analyze`), the phase diagrams of the four ICL algorithms:

- figures/phase_diagram.png: the dominant algorithm (colour) over task diversity N × training
  step (at the longest analysed context) and over N × context length (at the last checkpoint),
  for training-chain (id) and fresh-chain (ood) contexts. Distances are averaged over seeds and
  any other axes before the argmin (diverged runs left out; grey where every run diverged).
- figures/algorithm_distances.png: KL(algorithm ‖ model) of each algorithm over training for one
  N (solid; by default the middle N of those with a run that did not diverge), and the fitted mixture weights (dashed), at the longest analysed context.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from jaxsim import results  # noqa: E402
from jaxsim.config import ConfigError  # noqa: E402
from jaxsim.plotting import (axis_values, from_source, group_mean, label,  # noqa: E402
                             log_scale, save)
from jaxsim.testbeds.markov_mixture import LABELS  # noqa: E402

AXIS = "task.num_chains"
DIVERGED_COLOUR = "#bbbbbb"
COLOURS = {"unigram_retrieval": "#4477aa", "bigram_retrieval": "#66ccee",
           "unigram_inference": "#ee6677", "bigram_inference": "#ccbb44"}


def _by_n(doc: dict, split: str, key: str) -> tuple[list[int], np.ndarray]:
    """Mean over the runs of each N of `key`: [num_N, S, G, ...]. Only runs saved at the same
    steps as the first run are drawn (a train.steps axis gives other step grids)."""
    runs = [r for r in doc["runs"] if r["steps"] == doc["runs"][0]["steps"]]
    values = sorted({int(r["axes"][AXIS]) for r in runs})
    stacked = []
    for n in values:
        arrays = [np.array(r[split][key], dtype=float) for r in runs if int(r["axes"][AXIS]) == n]
        stacked.append(np.nanmean(np.stack(arrays), axis=0))
    return values, np.stack(stacked)


def _phase_panel(ax, kl_YxXxA: np.ndarray, x_labels: list, y_labels: list, x_title: str):
    """The dominant algorithm of each cell (argmin of its mean distances); grey where they are
    not finite (every run of the cell diverged)."""
    names = list(COLOURS)
    cmap = ListedColormap([COLOURS[n] for n in names]).with_extremes(bad=DIVERGED_COLOUR)
    finite = np.isfinite(kl_YxXxA)
    dominant = np.ma.masked_array(np.argmin(np.where(finite, kl_YxXxA, np.inf), axis=-1),
                                  mask=~finite.all(axis=-1))
    ax.imshow(dominant, aspect="auto", origin="lower", vmin=-0.5, vmax=3.5,
              cmap=cmap, interpolation="nearest")
    stride = max(1, len(x_labels) // 10)
    ax.set_xticks(range(0, len(x_labels), stride), [str(v) for v in x_labels[::stride]],
                  rotation=45, ha="right")
    ax.set_yticks(range(len(y_labels)), [str(v) for v in y_labels])
    ax.set_xlabel(x_title)
    ax.set_ylabel("task diversity N")


def phase_diagram(out: Path, doc: dict) -> Path:
    steps, lengths = doc["runs"][0]["steps"], doc["context_lengths"]
    fig, axes = plt.subplots(len(doc["splits"]), 2, figsize=(12, 4.2 * len(doc["splits"])),
                             squeeze=False)
    for row, split in zip(axes, doc["splits"]):
        ns, kl = _by_n(doc, split, "kl_alg_to_model")        # [N, S, G, A]
        what = "training chains" if split == "id" else "fresh chains"
        _phase_panel(row[0], kl[:, :, -1], steps, ns, "training step")
        row[0].set_title(f"{what}: dominant algorithm, context {lengths[-1]}")
        _phase_panel(row[1], kl[:, -1], lengths, ns, "context length")
        row[1].set_title(f"{what}: dominant algorithm, step {steps[-1]}")
    handles = [Patch(color=c, label=n.replace("_", " ")) for n, c in COLOURS.items()]
    handles.append(Patch(color=DIVERGED_COLOUR, label="diverged (every run)"))
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False)
    return save(fig, out, "phase_diagram.png", rect=(0, 0.05, 1, 1))  # room for the legend


def distance_curves(out: Path, doc: dict, num_chains: int | None) -> Path:
    steps = doc["runs"][0]["steps"]
    fig, axes = plt.subplots(1, len(doc["splits"]), figsize=(6 * len(doc["splits"]), 4.2),
                             squeeze=False)
    for ax, split in zip(axes[0], doc["splits"]):
        ns, kl = _by_n(doc, split, "kl_alg_to_model")
        _, weights = _by_n(doc, split, "mixture_weights")
        drawable = [v for j, v in enumerate(ns) if np.isfinite(kl[j]).any()] or ns
        n = num_chains if num_chains in ns else drawable[len(drawable) // 2]
        i = ns.index(n)
        twin = ax.twinx()
        for a, name in enumerate(doc["algorithms"]):
            ax.plot(steps, kl[i, :, -1, a], color=COLOURS[name], lw=2, label=name.replace("_", " "))
            twin.plot(steps, weights[i, :, -1, a], color=COLOURS[name], lw=1, ls="--")
        ax.set_xscale("log")
        if np.isfinite(kl[i]).any():
            ax.set_yscale("log")
        else:   # a log axis of nothing cannot be drawn
            ax.text(0.5, 0.5, "every run diverged", transform=ax.transAxes, ha="center")
        ax.set_xlabel("training step")
        ax.set_ylabel("KL(algorithm ‖ model), nats (solid)")
        twin.set_ylabel("mixture weight (dashed)")
        twin.set_ylim(0, 1)
        what = "training chains" if split == "id" else "fresh chains"
        ax.set_title(f"N = {n}, {what}, context {doc['context_lengths'][-1]}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save(fig, out, "algorithm_distances.png")


def loss_curves(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path:
    """A staged sweep's curves start at step 0 from its source runs' last evaluation (a linear
    step axis, with the source marked)."""
    own, metrics = metrics, from_source(rows, metrics)
    staged = metrics is not own
    steps = metrics["step"]
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    if axes:
        names, index = axis_values(rows, axes[0])
        title = label(axes[0], LABELS)
    else:
        names, index = ["all runs"], np.zeros(len(rows), int)
        title = None
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(names)))
    for panel, split, what in zip(panels, ("id", "ood"),
                                  ("training chains (in-distribution)",
                                   "fresh chains (out-of-distribution)")):
        model = group_mean(metrics[f"eval_loss_{split}"], index, len(names))
        oracle = np.nanmean(own[f"oracle_loss_{split}"])   # of this sweep's own task
        for i, name in enumerate(names):
            panel.plot(steps, model[i], color=colours[i], label=name, lw=1.8)
        panel.axhline(oracle, color="k", ls="--", lw=1, label="oracle (true chain)")
        if staged:
            panel.axvline(0, color="0.5", lw=0.8)
            panel.set_xlabel("fine-tuning step (0 = the source run after pretraining)")
        else:
            log_scale(panel, x=True)    # linear where every run diverged (nothing to draw)
            panel.set_xlabel("training step")
        panel.set_title(f"held-out loss, {what}", fontsize=10)
        panel.grid(alpha=0.3)
    panels[0].set_ylabel("next-token cross-entropy (nats)")
    panels[1].legend(title=title, fontsize=8, title_fontsize=8, loc="upper right")
    return save(fig, out, "loss_curves.png")


def ood_gap_heatmap(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path | None:
    gap_RxE = metrics["eval_loss_ood"] - metrics["oracle_loss_ood"]
    if not axes:
        return None
    y_names, y_index = axis_values(rows, axes[0])
    if len(axes) >= 2:
        x_names, x_index = axis_values(rows, axes[1])
        grid = np.full((len(y_names), len(x_names)), np.nan)
        final = np.array([g[np.isfinite(g)][-1] if np.isfinite(g).any() else np.nan
                          for g in gap_RxE])
        for yi in range(len(y_names)):
            for xi in range(len(x_names)):
                sel = (y_index == yi) & (x_index == xi)
                if sel.any():
                    grid[yi, xi] = np.nanmean(final[sel])
        x_label, title = label(axes[1], LABELS), "final OOD loss − oracle loss"
    else:
        grid = group_mean(gap_RxE, y_index, len(y_names))
        x_names = [str(s) for s in metrics["step"]]
        x_label, title = "training step", "OOD loss − oracle loss over training"
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(x_names) + 3), max(3.5, 0.5 * len(y_names) + 2)))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="magma_r")
    fig.colorbar(image, ax=ax, label="nats (lower is better)")
    stride = max(1, len(x_names) // 12)
    ax.set_xticks(range(0, len(x_names), stride), x_names[::stride], rotation=45, ha="right")
    ax.set_yticks(range(len(y_names)), y_names)
    ax.set_xlabel(x_label)
    ax.set_ylabel(label(axes[0], LABELS))
    ax.set_title(title + " (mean over seeds)")
    return save(fig, out, "ood_gap_heatmap.png")


def phases(out: Path, num_chains: int | None = None) -> list[Path]:
    """Both phase figures, if DIR/analysis.json exists and the sweep has a task.num_chains
    axis."""
    doc = results.read_analysis(out)
    if doc is None or not doc["runs"] or AXIS not in doc["runs"][0]["axes"]:
        return []
    return [phase_diagram(Path(out), doc), distance_curves(Path(out), doc, num_chains)]


def _check_num_chains(num_chains: int | None, axes: list[str], rows: list[dict]) -> None:
    """`plot --num-chains N` names one of the sweep's task diversities (checked before any
    figure is drawn, never silently replaced by another)."""
    if num_chains is None:
        return
    if AXIS not in axes:
        raise ConfigError(f"--num-chains applies to a sweep with a {AXIS} axis; this one has "
                          f"{', '.join(axes) or 'no axes'}")
    values = sorted({int(float(r[AXIS])) for r in rows})
    if num_chains not in values:
        raise ConfigError(f"--num-chains {num_chains} is not a task diversity of this sweep; "
                          f"allowed: {', '.join(map(str, values))}")


def draw(request) -> list[Path]:
    """The loss curves and OOD gap (from metrics.npz), then the phase figures."""
    out, axes, rows, metrics = request.out, request.axes, request.rows, request.metrics
    _check_num_chains(request.options.get("num_chains"), axes, rows)
    return [loss_curves(out, axes, rows, metrics), ood_gap_heatmap(out, axes, rows, metrics),
            *phases(out, request.options.get("num_chains"))]
