"""Edit-study figures, drawn from edits.csv and edits.npz only (no JAX).

edits_shattering.png   R against the edit's cycle distance, one line per method, one panel
                       per value of the source sweep's axes (mean over the runs' edits, bars
                       ± 2 standard errors)
edits_accuracy.png     accuracy on untouched facts after the edit against R, per method: each
                       edit a dot, binned means as a line; panels for every untouched fact, those
                       of the edited entity itself (d0), its cycle neighbours (d1_2) and far
                       entities (d9plus); the dashed line is the accuracy before any edit
edits_efficacy.png     efficacy (edited prompt) and paraphrase efficacy against distance, per
                       method
edits_pca.png          one run's entity representations in the first two principal components
                       of the unedited model's: before, after ROME's edit 0 at the smallest and
                       at the largest distance; entities joined in the order of the edited
                       relation's cycle and coloured by their position on it (rings, where the
                       model has learned them); edit.repr_site=query: that cycle's query
                       representations
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"rome": "tab:blue", "memit": "tab:orange", "finetune": "tab:green",
           "alphaedit": "tab:red"}


def _methods(frame) -> list[str]:
    return [m for m in COLOURS if m in set(frame.method)]


def _groups(frame) -> list[tuple[str, object]]:
    """(title, rows) per value of the source sweep's axes (the columns between seed and step)."""
    cols = list(frame.columns)
    axes = cols[cols.index("seed") + 1:cols.index("step")]
    if not axes:
        return [("all runs", frame)]
    return [(", ".join(f"{k}={v}" for k, v in zip(axes, key if isinstance(key, tuple)
                                                  else (key,))), part)
            for key, part in frame.groupby(axes if len(axes) > 1 else axes[0])]


def _shattering(plt, frame, path: Path) -> None:
    groups = _groups(frame)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    for ax, (title, part) in zip(axes[0], groups):
        for m in _methods(part):
            s = part[part.method == m].groupby("distance").shattering.agg(["mean", "std",
                                                                           "count"])
            ax.errorbar(s.index, s["mean"], yerr=2 * s["std"] / np.sqrt(s["count"]),
                        marker="o", color=COLOURS[m], capsize=2, label=m)
        if (part.distance > 0).all():       # corrective edits sit at distance 0
            ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("edit distance d along the cycle")
        ax.set_title(f"shattering, {title} ({part.run_id.nunique()} runs)\nmean ± 2 s.e. "
                     f"over edits", fontsize=9)
    axes[0, 0].set_ylabel("shattering R (linear below 1e-3)")
    axes[0, 0].legend(fontsize=7)
    _save(fig, path)


def _accuracy(plt, frame, path: Path) -> None:
    panels = [("all", "every untouched fact"), ("d0", "the edited entity's other facts"),
              ("d1_2", "entities 1-2 steps away"), ("d9plus", "entities 9+ steps away")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), sharey=True)
    for ax, (name, title) in zip(axes, panels):
        col = f"acc_after_{name}"
        for m in _methods(frame):
            part = frame[(frame.method == m) & frame[col].notna()]
            if part.empty:
                continue
            ax.scatter(part.shattering, part[col], s=3, alpha=0.15, color=COLOURS[m])
            edges = np.unique(np.quantile(part.shattering, np.linspace(0, 1, 9)))
            if len(edges) > 2:
                which = np.clip(np.digitize(part.shattering, edges[1:-1]), 0, len(edges) - 2)
                means = part.groupby(which)[["shattering", col]].mean()
                ax.plot(means.shattering, means[col], marker="o", color=COLOURS[m], label=m)
        before = frame[f"acc_before_{name}"].mean()
        ax.axhline(before, color="k", ls="--", lw=0.8, label="before")
        ax.set_xscale("symlog", linthresh=1e-3)     # R spans 0 (no move) to order 10
        ax.set_xlim(left=0)
        ax.set_xlabel("shattering R (linear below 1e-3)")
        ax.set_title(f"accuracy after the edit:\n{title}", fontsize=9)
    axes[0].set_ylabel("accuracy (top-1)")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def _efficacy(plt, frame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, col, title in ((axes[0], "efficacy", "efficacy (the edited prompt)"),
                           (axes[1], "paraphrase", "paraphrase efficacy (other contexts)")):
        for m in _methods(frame):
            s = frame[frame.method == m].groupby("distance")[col].mean()
            ax.plot(s.index, s.values, marker="o", color=COLOURS[m], label=m)
        if (frame.distance > 0).all():
            ax.set_xscale("log", base=2)
        ax.set_xlabel("edit distance d")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.03, 1.03)
    axes[0].set_ylabel("share of edits with the new object top-1")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def _pca(plt, arrays, frame, path: Path) -> None:
    run = int(frame.run_id.min())
    reps = arrays[f"representations_{run}"]               # [3, N, D]
    order = arrays[f"order_{run}"]                         # [C, N]
    subject, _, new_small, new_large, cycle = (int(v) for v in arrays[f"pca_edit_{run}"])
    query = "repr_site" in arrays and str(arrays["repr_site"]) == "query"
    if query:     # the edited relation's cycle's query representations
        reps = reps.reshape(reps.shape[0], reps.shape[1], order.shape[0], -1)[:, :, cycle]
    distances = arrays["distances"]
    row = frame[(frame.run_id == run) & (frame.method == "rome") & (frame.edit == 0)]
    centre = reps[0].mean(0)
    _, _, vt = np.linalg.svd(reps[0] - centre, full_matrices=False)
    ring = order[cycle]
    position = np.argsort(ring)
    titles = ["before", f"after ROME, d={distances[0]}", f"after ROME, d={distances[-1]}"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for i, ax in enumerate(axes):
        xy = (reps[i] - centre) @ vt[:2].T
        loop = np.append(ring, ring[0])
        ax.plot(xy[loop, 0], xy[loop, 1], color="grey", lw=0.6)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=position, cmap="twilight", s=14)
        ax.scatter(*xy[subject], marker="*", s=160, color="k", label="edited subject")
        if i:
            new = new_small if i == 1 else new_large
            ax.scatter(*xy[new], marker="X", s=80, color="tab:red", label="new object")
            r = row[row.distance == distances[0 if i == 1 else -1]]
            if not r.empty:
                titles[i] += f" (R {float(r.shattering.iloc[0]):.2f})"
        ax.set_title(titles[i], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(fontsize=7)
    fig.colorbar(sc, ax=axes, label=f"position on cycle {cycle}")
    what = (f"query representations on cycle {cycle}" if query else "entity representations")
    fig.suptitle(f"{what}, run {run}: PCA of the unedited model's", fontsize=10)
    _save(fig, path, tight=False)


def _save(fig, path: Path, tight: bool = True) -> None:
    import matplotlib.pyplot as plt
    path.parent.mkdir(exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from jaxsim.editing import ARRAYS, RECORDS
    frame = pd.read_csv(out / RECORDS)
    figures = out / "figures"
    written = []
    for name, fn in (("edits_shattering", _shattering), ("edits_accuracy", _accuracy),
                     ("edits_efficacy", _efficacy)):
        fn(plt, frame, figures / f"{name}.png")
        written.append(figures / f"{name}.png")
    if (out / ARRAYS).is_file():
        with np.load(out / ARRAYS) as arrays:
            _pca(plt, dict(arrays), frame, figures / "edits_pca.png")
        written.append(figures / "edits_pca.png")
    return written
