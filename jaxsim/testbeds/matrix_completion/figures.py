"""Matrix-completion figures, drawn from saved files only.

- figures/loss_curves.png: held-out MSE over all, masked and observed entries for every run
  (colour = the leading axis), the copy baseline dashed; after `jaxsim analyze`, each run's
  plateau start (o) and drop (x) from analysis.json.
- figures/plateau_length.png (after `jaxsim analyze`): plateau length (steps) over the two
  leading axes (mean over seeds; a cell where some run never dropped shows ">=" the censored
  mean); with one axis, a line plot.
- figures/attention_maps.png (after `jaxsim analyze`): each head's mean attention for one run at
  the last checkpoint inside the plateau and at the final one, with its same-row / same-column
  scores.

A diverged run (runs.csv status) is not drawn: its curves are NaN, its plateau cells grey
("diverged") where every run of the cell diverged, and each figure's title names it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsim.testbeds.matrix_completion import ATTENTION  # noqa: E402
from jaxsim.plotting import (diverged, diverged_note, drawable_analysis,  # noqa: E402
                             log_scale, save)
from jaxsim.plotting import axis_values as _axis_values  # noqa: E402
from jaxsim.plotting import label as axis_label  # noqa: E402
from jaxsim.testbeds.matrix_completion import LABELS  # noqa: E402


def _label(key: str) -> str:
    return axis_label(key, LABELS)

CURVES = (("eval_mse_id", "all entries", "copy_mse_id"),
          ("eval_mse_masked_id", "masked entries", "copy_mse_masked_id"),
          ("eval_mse_observed_id", "observed entries", None))


def _analysis(out: Path) -> dict | None:
    return drawable_analysis(out, "matrix_completion")


def plateaus(out: Path, rows: list[dict]) -> list[dict] | None:
    """Each runs.csv row's plateau as `jaxsim analyze` found it (None before analysis; none
    found for a run that diverged)."""
    doc = _analysis(out)
    if doc is None:
        return None
    found = {e["run_id"]: e["plateau"] for e in doc["runs"]}
    return [found.get(int(row["run_id"]), {"start": None, "end": None, "length": None,
                                            "dropped": False}) for row in rows]


def loss_curves(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path:
    steps = metrics["step"]
    found = plateaus(out, rows)
    names, index = _axis_values(rows, axes[0]) if axes else (["all runs"], np.zeros(len(rows), int))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(names)))
    fig, panels = plt.subplots(1, 3, figsize=(15, 4.2))
    for panel, (key, what, baseline) in zip(panels, CURVES):
        for r in range(len(rows)):
            curve = metrics[key][r]
            panel.plot(steps, curve, color=colours[index[r]], lw=1.2, alpha=0.85,
                       label=names[index[r]] if r == int(np.flatnonzero(index == index[r])[0])
                       else None)
            marks = (("o", found[r]["start"]), ("x", found[r]["end"])) if found else ()
            for mark, at in marks:
                if at is not None:
                    panel.plot(at, np.interp(at, steps, np.nan_to_num(curve)), mark,
                               color=colours[index[r]], ms=6)
        if baseline is not None:
            panel.axhline(np.nanmean(metrics[baseline]), color="k", ls="--", lw=1,
                          label="copy baseline")
        log_scale(panel, y=True)
        panel.set_xlabel("training step")
        panel.set_title(f"held-out MSE, {what}", fontsize=10)
        panel.grid(alpha=0.3)
    panels[0].set_ylabel("MSE")
    panels[0].legend(title=_label(axes[0]) if axes else None, fontsize=8, title_fontsize=8)
    doc = _analysis(out)
    rule = (doc["plateau_rule"].split(";")[1].strip() if doc and ";" in doc["plateau_rule"]
            else "run `jaxsim analyze` to mark them")
    note = diverged_note(diverged(rows))
    fig.suptitle(f"o = plateau start, x = sudden drop ({rule})" + (f"; {note}" if note else ""),
                 fontsize=8)
    return save(fig, out, "loss_curves.png", rect=(0, 0, 1, 0.95))


def plateau_length(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path | None:
    found = plateaus(out, rows)
    if not axes or found is None:
        return None
    length = np.array([f["length"] if f["length"] is not None else np.nan for f in found], float)
    bad = np.array([r["status"] == "diverged" for r in rows])
    censored = np.array([not f["dropped"] for f in found]) & ~bad
    y_names, y_index = _axis_values(rows, axes[0])
    x_names, x_index = (_axis_values(rows, axes[1]) if len(axes) > 1
                        else (["all"], np.zeros(len(rows), int)))
    grid = np.full((len(y_names), len(x_names)), np.nan)
    open_, lost = np.zeros_like(grid, bool), np.zeros_like(grid, bool)
    for yi in range(len(y_names)):
        for xi in range(len(x_names)):
            sel = (y_index == yi) & (x_index == xi)
            lost[yi, xi] = sel.any() and bad[sel].all()
            if np.isfinite(length[sel]).any():
                grid[yi, xi] = np.nanmean(length[sel])
                open_[yi, xi] = censored[sel].any()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(x_names) + 3), max(3.5, 0.6 * len(y_names) + 2)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#bbbbbb")
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", origin="lower", cmap=cmap)
    fig.colorbar(image, ax=ax, label="plateau length (steps)")
    for yi in range(len(y_names)):
        for xi in range(len(x_names)):
            if np.isfinite(grid[yi, xi]):
                text = (">=" if open_[yi, xi] else "") + f"{grid[yi, xi]:.0f}"
                ax.text(xi, yi, text, ha="center", va="center", fontsize=8, color="w")
            elif lost[yi, xi]:
                ax.text(xi, yi, "diverged", ha="center", va="center", fontsize=8, color="k")
    ax.set_xticks(range(len(x_names)), x_names)
    ax.set_yticks(range(len(y_names)), y_names)
    ax.set_xlabel(_label(axes[1]) if len(axes) > 1 else "")
    ax.set_ylabel(_label(axes[0]))
    note = diverged_note(diverged(rows))
    ax.set_title("plateau length, mean over seeds (>= : some run never dropped)"
                 + (f"\n{note}" if note else ""), fontsize=10)
    return save(fig, out, "plateau_length.png")


def attention_maps(out: Path, run_id: int | None = None) -> Path | None:
    path = Path(out) / ATTENTION
    if not path.is_file():
        return None
    with np.load(path) as f:
        ids, steps, attention = f["run_id"], f["steps"], f["attention"]
        row_score, col_score = f["row_score"], f["col_score"]
    doc = _analysis(out)
    healthy = {e["run_id"] for e in doc["runs"]} if doc is not None else set()
    drawable = [int(r) for r in ids if int(r) in healthy]   # a diverged run's maps are NaN
    if not drawable:
        return None
    run_id = run_id if run_id in drawable else drawable[0]
    i = int(np.flatnonzero(ids == run_id)[0])
    maps = attention[i]                                    # [2, layers, heads, P, P]
    _, layers, heads, p, _ = maps.shape
    n = int(round(p ** 0.5))
    fig, grid = plt.subplots(2 * layers, heads, figsize=(1.9 * heads, 2.0 * 2 * layers),
                             squeeze=False)
    for t, when in enumerate(("plateau", "final")):
        for layer in range(layers):
            rows, cols = row_score[i, t, layer], col_score[i, t, layer]
            for h in range(heads):
                ax = grid[t * layers + layer, h]
                ax.imshow(maps[t, layer, h], cmap="magma", vmin=0)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{when} s{steps[i, t]} L{layer}H{h}\nrow {float(rows[h]):.2f} "
                             f"col {float(cols[h]):.2f}", fontsize=6)
    fig.suptitle(f"mean attention (query x key over the {p} entries), run {run_id}; "
                 f"uniform row/col score = {(n - 1) / n ** 2:.2f}", fontsize=8)
    return save(fig, out, "attention_maps.png", rect=(0, 0, 1, 0.97))


def draw(out: Path, axes: list[str], rows: list[dict], metrics: dict,
         run_id: int | None = None) -> list[Path]:
    paths = [loss_curves(out, axes, rows, metrics), plateau_length(out, axes, rows, metrics),
             attention_maps(out, run_id)]
    return [p for p in paths if p is not None]
