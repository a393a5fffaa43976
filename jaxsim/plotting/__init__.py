"""Figures from saved results only: the driver (`plotting.figures.draw_all`) and the helpers
every testbed's figures share (saving, axis values of runs.csv, readable axis labels, diverged
runs kept out of the picture and named in it); `plotting.styles`: every swept axis told apart,
keys off the data, runs named by their axis values."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxsim import results

# Readable names of the core keys; a testbed passes its own task keys' names (`Testbed.labels`).
LABELS = {"train.lr": "learning rate", "train.weight_decay": "weight decay",
          "model.d_model": "width", "model.k": "TopK k", "model.kind": "SAE",
          "model.sparsity_coef": "sparsity coefficient", "model.d_sae": "dictionary width",
          "model.num_layers": "depth", "model.init_scale": "init scale",
          "model.causal_coef": "causal coefficient", "model.positional": "positions",
          "init.run": "source run", "init.step": "source step"}


def save(fig, out: Path, name: str, rect: tuple = (0, 0, 1, 1)) -> Path:
    """Lay out, write DIR/figures/NAME as a PNG and close the figure; the saved area grows to
    hold keys placed outside the axes (`styles.outside`), so they never cover data."""
    import warnings

    import matplotlib.pyplot as plt

    with warnings.catch_warnings():     # free-standing axes (a colour bar, a key) stay put
        warnings.filterwarnings("ignore", message=".*not compatible with tight_layout")
        fig.tight_layout(rect=rect)
    path = Path(out) / results.FIGURES / name
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return path


def label(key: str, labels: dict | None = None) -> str:
    """A readable name for a swept key: the testbed's `labels`, the core's, or the key."""
    return (labels or {}).get(key) or LABELS.get(key, key)


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{int(v)}" if v.is_integer() and abs(v) < 1e6 else f"{v:g}"
    return str(v)


def axis_values(rows: list[dict], key: str) -> tuple[list, np.ndarray]:
    """Sorted distinct values of an axis column of runs.csv and each run's index into them."""
    raw = [r[key] for r in rows]
    try:
        parsed = [float(v) for v in raw]
    except ValueError:
        parsed = raw
    values = sorted(set(parsed), key=lambda v: (isinstance(v, str), v))
    return [fmt(v) for v in values], np.array([values.index(v) for v in parsed])


def group_mean(values_RxE: np.ndarray, index_R: np.ndarray, count: int) -> np.ndarray:
    """[count, E] the nan-mean of the runs with each index."""
    with np.errstate(all="ignore"):
        return np.stack([np.nanmean(values_RxE[index_R == i], axis=0) for i in range(count)])


def from_source(rows: list[dict], metrics: dict) -> dict:
    """A staged sweep's metrics with a step 0 prepended: each run's source run's value at the
    step it started from (runs.csv's source_dir, source_run, source_step), so its curves start
    where pretraining left off (the source's own held-out data). Other sweeps', or a source no
    longer on disk, are returned unchanged."""
    if not rows or "source_dir" not in rows[0]:
        return metrics
    sources: dict[str, dict] = {}
    for d in {r["source_dir"] for r in rows}:
        if not (Path(d) / results.METRICS).is_file():
            return metrics
        sources[d] = results.read_metrics(Path(d))
    names = [n for n in metrics if n != "step"]
    start = {n: np.full(len(rows), np.nan, np.float32) for n in names}
    for i, row in enumerate(rows):
        src = sources[row["source_dir"]]
        at = np.flatnonzero(src["step"] == int(row["source_step"]))
        for n in names:
            if n in src and at.size:
                start[n][i] = src[n][int(row["source_run"]), at[0]]
    staged = {n: np.concatenate([start[n][:, None], metrics[n]], axis=1) for n in names}
    return {"step": np.concatenate([[0], metrics["step"]]), **staged}


def drawable_analysis(out: Path, task: str | None = None) -> dict | None:
    """DIR/analysis.json (None before `jaxsim analyze`, or when `task` is given and another
    testbed's analysis wrote it), with the runs that diverged moved from doc["runs"] to
    doc["diverged"] (their run ids): a diverged run's numbers (NaN, or the zeros of a model
    that outputs NaN: no grammatical samples, no recovered concept) are not findings."""
    doc = results.read_analysis(out)
    if doc is None or (task is not None and doc.get("task") != task):
        return None
    runs = doc.get("runs", [])
    doc["diverged"] = [r["run_id"] for r in runs if r.get("status") == "diverged"]
    doc["runs"] = [r for r in runs if r.get("status") != "diverged"]
    return doc


def diverged(rows: list[dict]) -> list[int]:
    """The run ids whose runs.csv status is "diverged"."""
    return [int(r["run_id"]) for r in rows if r.get("status") == "diverged"]


def diverged_note(run_ids: list[int]) -> str:
    """A figure title's note on the runs left out: "" when none diverged."""
    if not run_ids:
        return ""
    ids = ", ".join(map(str, run_ids[:8])) + (", ..." if len(run_ids) > 8 else "")
    return f"{'run' if len(run_ids) == 1 else 'runs'} {ids} diverged (NaN loss): not drawn"


def log_scale(ax, x: bool = False, y: bool = False) -> None:
    """Log x and/or y axes where the panel has positive finite data; where it has none (every
    run in it diverged, so its lines are all NaN) the axis stays linear, which matplotlib can
    draw, and the panel says why it is empty."""
    lim = ax.dataLim
    drawable = np.isfinite([lim.x0, lim.x1, lim.y0, lim.y1]).all()
    if x and drawable and lim.x1 > 0:
        ax.set_xscale("log")
    if y and drawable and lim.y1 > 0:
        ax.set_yscale("log")
    if not drawable:
        ax.text(0.5, 0.5, "nothing finite to draw:\nevery run here diverged",
                transform=ax.transAxes, ha="center", va="center", color="0.4")
