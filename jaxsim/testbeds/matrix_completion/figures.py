"""Matrix-completion figures, drawn from saved files only.

- figures/loss_curves.png: held-out MSE over all, masked and observed entries for every run,
  the first two divided by the run's own copy baseline (observed entries copied, 0 for masked
  ones, on the run's own held-out matrices: runs' baselines differ, 0.020-0.034 at mask 0.2 and
  0.3, so one line for all would misplace them); 1 (dashed) = copying. Colour, line style and
  marker: one swept axis each (seeds share a style; the key beside the panels). After `jaxsim
  analyze`, each run's plateau start (o) and drop (x) from analysis.json.
- figures/plateau_length.png (after `jaxsim analyze`): plateau length (steps) over the two
  leading axes, mean over seeds; a cell where some run never dropped is censored (its mean only
  a lower bound): hatched, uncoloured, written "≥ L (no drop by S)"; colour (with its bar) only
  where every run dropped.
- figures/attention_maps.png (after `jaxsim analyze`): each head's mean attention for one run
  (one that dropped, when any did; the title names its axis values) at the last checkpoint
  inside the plateau and at the final one, with its same-row / same-column scores and a colour
  bar; a run without a drop has one checkpoint in both rows, and the title says so.

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
from jaxsim.plotting.styles import outside, row_mean, run_styles, run_title  # noqa: E402
from jaxsim.testbeds.matrix_completion import LABELS  # noqa: E402


def _label(key: str) -> str:
    return axis_label(key, LABELS)

# (metric, panel title, its copy baseline: each run is drawn relative to its own)
CURVES = (("eval_mse_id", "all entries", "copy_mse_id"),
          ("eval_mse_masked_id", "masked entries", "copy_mse_masked_id"),
          ("eval_mse_observed_id", "observed entries", None))


def relative_to_copy(metrics: dict, key: str, baseline: str | None) -> np.ndarray:
    """[R, E] the metric over each run's own copy baseline (the mean of its evaluations: the
    baseline is a fixed number of the run's own held-out matrices), or the metric itself
    where it has none. Runs' baselines differ (their matrices differ), so one baseline line
    for all runs would place runs above or below "copy" that sit exactly on their own."""
    values = np.asarray(metrics[key], float)
    if baseline is None:
        return values
    with np.errstate(all="ignore"):
        own_R = row_mean(np.asarray(metrics[baseline], float))
        return values / own_R[:, None]


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
    looks = run_styles(rows, axes, LABELS)
    fig, panels = plt.subplots(1, 3, figsize=(15, 4.2))
    for panel, (key, what, baseline) in zip(panels, CURVES):
        curves = relative_to_copy(metrics, key, baseline)
        for r in range(len(rows)):
            panel.plot(steps, curves[r], lw=1.2, alpha=0.85, **looks.styles[r])
            marks = (("o", found[r]["start"]), ("x", found[r]["end"])) if found else ()
            for mark, at in marks:
                if at is not None:
                    panel.plot(at, np.interp(at, steps, np.nan_to_num(curves[r])), mark,
                               color=looks.styles[r]["color"], ms=6)
        if baseline is not None:
            panel.axhline(1.0, color="k", ls="--", lw=1)
            panel.set_ylabel("MSE / the run's own copy baseline")
            panel.set_title(f"held-out MSE, {what}, each run over its own copy baseline\n"
                            f"(dashed = 1: copying the observed entries, 0 for masked ones)",
                            fontsize=9)
        else:
            panel.set_ylabel("MSE")
            panel.set_title(f"held-out MSE, {what}", fontsize=9)
        finite = curves[np.isfinite(curves) & (curves > 0)]
        if finite.size and finite.max() / finite.min() > 10:   # else a linear axis reads better
            log_scale(panel, y=True)
        panel.set_xlabel("training step")
        panel.grid(alpha=0.3)
    outside(panels[-1], handles=looks.handles)
    doc = _analysis(out)
    rule = (doc["plateau_rule"].split(";")[1].strip() if doc and ";" in doc["plateau_rule"]
            else "run `jaxsim analyze` to mark them")
    note = diverged_note(diverged(rows))
    fig.suptitle(f"one line per run (seeds share a style); o = plateau start, x = sudden drop "
                 f"({rule})" + (f"; {note}" if note else ""), fontsize=8)
    return save(fig, out, "loss_curves.png", rect=(0, 0, 1, 0.95))


def plateau_cells(rows: list[dict], found: list[dict], y_key: str, x_key: str | None):
    """Per cell of the two leading axes: (y names, x names, mean plateau length [Y, X] over
    its runs, censored [Y, X]: how many of its runs never dropped (then the mean is only a lower
    bound), runs [Y, X], lost [Y, X]: every run diverged). A run without a drop has length =
    last step - start."""
    length = np.array([f["length"] if f["length"] is not None else np.nan for f in found], float)
    bad = np.array([r["status"] == "diverged" for r in rows])
    censored = np.array([not f["dropped"] for f in found]) & ~bad
    y_names, y_index = _axis_values(rows, y_key)
    x_names, x_index = (_axis_values(rows, x_key) if x_key else (["all"], np.zeros(len(rows), int)))
    grid = np.full((len(y_names), len(x_names)), np.nan)
    open_, runs = np.zeros(grid.shape, int), np.zeros(grid.shape, int)
    lost = np.zeros_like(grid, bool)
    for yi in range(len(y_names)):
        for xi in range(len(x_names)):
            sel = (y_index == yi) & (x_index == xi)
            lost[yi, xi] = sel.any() and bad[sel].all()
            if np.isfinite(length[sel]).any():
                grid[yi, xi] = np.nanmean(length[sel])
                open_[yi, xi] = censored[sel].sum()
                runs[yi, xi] = np.isfinite(length[sel]).sum()
    return y_names, x_names, grid, open_, runs, lost


def plateau_length(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path | None:
    """Colour = the mean plateau length where every run of the cell dropped; a cell with a run
    that never dropped is censored (its mean only a lower bound): hatched, uncoloured, "≥"."""
    found = plateaus(out, rows)
    if not axes or found is None:
        return None
    y_names, x_names, grid, open_, runs, lost = plateau_cells(
        rows, found, axes[0], axes[1] if len(axes) > 1 else None)
    censored = open_ > 0
    last = int(np.nanmax(metrics["step"]))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(x_names) + 3), max(3.5, 0.6 * len(y_names) + 2)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    finding = np.ma.masked_where(~np.isfinite(grid) | censored, grid)
    image = ax.imshow(finding, aspect="auto", origin="lower", cmap=cmap)
    if finding.count():         # a colour bar only where some colour is a finding
        fig.colorbar(image, ax=ax, label="plateau length (steps), cells where every run dropped")
    middle = np.nanmean(finding.filled(np.nan)) if finding.count() else 0.0
    for (yi, xi), v in np.ndenumerate(grid):
        if censored[yi, xi]:
            ax.add_patch(plt.Rectangle((xi - 0.5, yi - 0.5), 1, 1, fill=False, hatch="///",
                                       edgecolor="0.6", lw=0))
            ax.text(xi, yi, f"≥ {v:.0f}\n({open_[yi, xi]} of {runs[yi, xi]} runs: no drop by "
                    f"{last})", ha="center", va="center", fontsize=7, color="k",
                    bbox=dict(fc="white", ec="none", alpha=0.8, pad=1))
        elif np.isfinite(v):            # dark text on the bright half of viridis
            ax.text(xi, yi, f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="k" if v > middle else "w")
        elif lost[yi, xi]:
            ax.add_patch(plt.Rectangle((xi - 0.5, yi - 0.5), 1, 1, color="#bbbbbb"))
            ax.text(xi, yi, "diverged", ha="center", va="center", fontsize=8, color="k")
    ax.set_xticks(range(len(x_names)), x_names)
    ax.set_yticks(range(len(y_names)), y_names)
    ax.set_xlabel(_label(axes[1]) if len(axes) > 1 else "")
    ax.set_ylabel(_label(axes[0]))
    rest = [_label(a) for a in axes[2:]]
    note = diverged_note(diverged(rows))
    ax.set_title("plateau length, mean over seeds" + (f" and {', '.join(rest)}" if rest else "")
                 + "\nhatched ≥: censored, some run had not dropped by the last step"
                 + (f"\n{note}" if note else ""), fontsize=9)
    return save(fig, out, "plateau_length.png")


def attention_maps(out: Path, rows: list[dict], axes: list[str], run_id: int | None = None
                   ) -> Path | None:
    """One run's mean attention maps inside the plateau and at the end (a run that dropped
    when there is one); the title names its axis values and says when the two are one
    checkpoint (no drop)."""
    path = Path(out) / ATTENTION
    if not path.is_file():
        return None
    with np.load(path) as f:
        ids, steps, attention = f["run_id"], f["steps"], f["attention"]
        row_score, col_score = f["row_score"], f["col_score"]
    doc = _analysis(out)
    healthy = {e["run_id"]: e["plateau"] for e in doc["runs"]} if doc is not None else {}
    drawable = [int(r) for r in ids if int(r) in healthy]   # a diverged run's maps are NaN
    if not drawable:
        return None
    dropped = [r for r in drawable if healthy[r]["dropped"]]
    run_id = run_id if run_id in drawable else (dropped or drawable)[0]
    i = int(np.flatnonzero(ids == run_id)[0])
    maps = attention[i]                                    # [2, layers, heads, P, P]
    _, layers, heads, p, _ = maps.shape
    n = int(round(p ** 0.5))
    same = int(steps[i, 0]) == int(steps[i, 1])
    fig, grid = plt.subplots(2 * layers, heads, figsize=(1.9 * heads + 0.8, 2.0 * 2 * layers),
                             squeeze=False)
    top = float(np.nanmax(maps)) if np.isfinite(maps).any() else 1.0
    for t, when in enumerate(("plateau", "final")):
        for layer in range(layers):
            rs, cs = row_score[i, t, layer], col_score[i, t, layer]
            for h in range(heads):
                ax = grid[t * layers + layer, h]
                image = ax.imshow(maps[t, layer, h], cmap="magma", vmin=0, vmax=top)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{when} s{steps[i, t]} L{layer}H{h}\nrow {float(rs[h]):.2f} "
                             f"col {float(cs[h]):.2f}", fontsize=6)
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    fig.colorbar(image, cax=fig.add_axes([0.92, 0.25, 0.015, 0.5]), label="attention weight")
    row = next((r for r in rows if int(r["run_id"]) == run_id), None)
    who = run_title(row, axes, LABELS) if row else f"run {run_id}"
    state = (f"no drop by step {int(steps[i, 1])}: both rows are that one checkpoint, still "
             f"on the plateau" if same else
             f"plateau (step {int(steps[i, 0])}) and after the drop (step {int(steps[i, 1])})")
    fig.suptitle(f"mean attention (query x key over the {p} entries), {who}\n{state}; uniform "
                 f"row/col score = {(n - 1) / n ** 2:.2f}", fontsize=8)
    return save(fig, out, "attention_maps.png", rect=(0, 0, 0.9, 0.95))


def draw(out: Path, axes: list[str], rows: list[dict], metrics: dict,
         run_id: int | None = None) -> list[Path]:
    paths = [loss_curves(out, axes, rows, metrics), plateau_length(out, axes, rows, metrics),
             attention_maps(out, rows, axes, run_id)]
    return [p for p in paths if p is not None]
