"""markov_mixture figures, drawn from saved files only.

- figures/loss_curves.png: held-out loss on training chains (in-distribution) and on fresh
  chains (out-of-distribution) over training, one line per combination of the swept axes'
  values (colour, line style and marker: one axis each), the mean over its seeds with a band
  from the lowest to the highest seed; the oracle loss (the true chains') dashed, one per line
  where they differ (each N's training chains have their own).
- figures/ood_gap_heatmap.png: final out-of-distribution loss minus oracle loss over the two
  leading axes (mean over seeds and any further axis, each cell's value written in it); with a
  single axis, over that axis x training step.

From DIR/analysis.json (after `jaxsim analyze`): figures/phase_diagram.png and
figures/algorithm_distances.png, drawn by `phase_figures` (the "undecided" margin: `verdicts`).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsim import results  # noqa: E402
from jaxsim.config import ConfigError  # noqa: E402
from jaxsim.plotting import (axis_values, from_source, group_mean, label,  # noqa: E402
                             log_scale, save)
from jaxsim.plotting.styles import differs, outside, row_mean, run_styles  # noqa: E402
from jaxsim.testbeds.markov_mixture import LABELS, phase_figures  # noqa: E402

AXIS = phase_figures.AXIS


def _combos(rows: list[dict], axes: list[str]) -> tuple[list[int], np.ndarray]:
    """(a representative run of each combination of the axes' values, each run's combination
    index): the runs a line averages (its seeds)."""
    keys = [tuple(r[a] for a in axes) for r in rows]
    distinct = list(dict.fromkeys(keys))
    index = np.array([distinct.index(k) for k in keys])
    return [int(np.flatnonzero(index == i)[0]) for i in range(len(distinct))], index


def loss_curves(out: Path, axes: list[str], rows: list[dict], metrics: dict,
                num_states: int | None = None) -> Path:
    """One line per combination of the axes' values (colour, line style, marker: one axis
    each), the mean over its seeds with their min-max band; the oracle dashed, one per line
    where the lines' oracles differ (each N's training chains have their own). A staged
    sweep's curves start at step 0 from its source runs' last evaluation (a linear step axis,
    with the source marked)."""
    own, metrics = metrics, from_source(rows, metrics)
    staged = metrics is not own
    steps = metrics["step"]
    looks = run_styles(rows, axes, LABELS)
    first, combo = _combos(rows, axes)
    seeds = np.bincount(combo)
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for panel, split, what in zip(panels, ("id", "ood"),
                                  ("training chains (in-distribution)",
                                   "fresh chains (out-of-distribution)")):
        model = metrics[f"eval_loss_{split}"]
        oracle_R = row_mean(own[f"oracle_loss_{split}"])   # of this sweep's own task
        oracle_C = np.array([np.nanmean(oracle_R[combo == c]) for c in range(len(first))])
        per_line = differs(oracle_C)
        with np.errstate(all="ignore"):
            for c, r in enumerate(first):
                runs = model[combo == c]
                look = {k: v for k, v in looks.styles[r].items()}
                panel.plot(steps, np.nanmean(runs, axis=0), lw=1.8, **look)
                if len(runs) > 1:
                    panel.fill_between(steps, np.nanmin(runs, 0), np.nanmax(runs, 0),
                                       color=look["color"], alpha=0.15, lw=0)
                if per_line:
                    panel.axhline(oracle_C[c], color=look["color"], ls=(0, (2, 2)), lw=0.9)
        if not per_line:
            panel.axhline(np.nanmean(oracle_C), color="k", ls=(0, (2, 2)), lw=1)
        if num_states:                  # predicting every state alike: learned nothing
            panel.axhline(np.log(num_states), color="0.55", ls=":", lw=1)
            panel.annotate(f"uniform prediction (ln {num_states})", (0.01, np.log(num_states)),
                           xycoords=("axes fraction", "data"), fontsize=7, color="0.4",
                           va="bottom")
        if staged:
            panel.axvline(0, color="0.5", lw=0.8)
            panel.set_xlabel("fine-tuning step (0 = the source run after pretraining)")
        else:
            log_scale(panel, x=True)    # linear where every run diverged (nothing to draw)
            panel.set_xlabel("training step")
        panel.set_title(f"held-out loss, {what}" + ("\ndashed: each line's oracle (its own "
                        "chains)" if per_line else "\ndashed: the oracle (true chain)"),
                        fontsize=10)
        panel.grid(alpha=0.3)
    panels[0].set_ylabel("next-token cross-entropy (nats)")
    outside(panels[1], handles=looks.handles)
    counts = sorted(set(int(n) for n in seeds))
    band = ", band = min to max over the seeds" if max(counts) > 1 else ""
    fig.suptitle(f"mean over {'/'.join(map(str, counts))} seed(s) per line{band}", fontsize=9)
    return save(fig, out, "loss_curves.png", rect=(0, 0, 1, 0.96))


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
    if grid.size <= 120:            # small enough to read each cell's number
        middle = np.nanmean(grid) if np.isfinite(grid).any() else 0.0
        for (yi, xi), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(xi, yi, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if v > middle else "k")
    stride = max(1, len(x_names) // 12)
    ax.set_xticks(range(0, len(x_names), stride), x_names[::stride], rotation=45, ha="right")
    ax.set_yticks(range(len(y_names)), y_names)
    ax.set_xlabel(x_label)
    ax.set_ylabel(label(axes[0], LABELS))
    rest = [label(a, LABELS) for a in axes[2:]]
    ax.set_title(title + f"\n(mean over seeds{' and ' + ', '.join(rest) if rest else ''})",
                 fontsize=10)
    return save(fig, out, "ood_gap_heatmap.png")


def phases(out: Path, num_chains: int | None = None) -> list[Path]:
    """Both phase figures (`phase_figures`), if DIR/analysis.json exists."""
    doc = results.read_analysis(out)
    if doc is None:
        return []
    return phase_figures.draw(Path(out), doc, num_chains)


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
    num_states = getattr(request.cfg.task, "num_states", None)
    return [loss_curves(out, axes, rows, metrics, num_states),
            ood_gap_heatmap(out, axes, rows, metrics),
            *phases(out, request.options.get("num_chains"))]
