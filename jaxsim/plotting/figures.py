"""Figures drawn from a results directory's saved files only (never re-trains).

- figures/loss_curves.png: held-out loss (in-distribution and out-of-distribution) over
  training, one line per value of the leading axis (mean over seeds and other axes), with the
  oracle loss of the true chains dashed.
- figures/ood_gap_heatmap.png: final out-of-distribution loss minus oracle loss over the two
  leading axes; with a single axis, over that axis x training step.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsim import config as cfglib  # noqa: E402
from jaxsim import results  # noqa: E402
from jaxsim.plotting import save  # noqa: E402
from jaxsim.plotting import phases  # noqa: E402

LABELS = {"task.num_chains": "task diversity N (chains)", "train.lr": "learning rate",
          "train.weight_decay": "weight decay", "task.context_length": "context length",
          "task.mask_prob": "mask probability", "task.rank": "rank r",
          "task.matrix_size": "matrix size n", "model.d_model": "width", "model.k": "TopK k",
          "model.kind": "SAE", "task.grammar": "grammar", "model.sparsity_coef": "sparsity coefficient",
          "model.d_sae": "dictionary width", "task.concept_mean": "μ₁ (concept mean)",
          "task.concept_noise": "σ (concept noise)", "model.num_layers": "depth",
          "model.init_scale": "init scale", "task.dim": "d",
          "task.pretrain_frac": "pretraining fraction", "task.vocab": "vocabulary"}


def _label(key: str) -> str:
    return LABELS.get(key, key)


def _axis_values(rows: list[dict], key: str) -> tuple[list, np.ndarray]:
    """Sorted distinct values of an axis column and each run's index into them."""
    raw = [r[key] for r in rows]
    try:
        parsed = [float(v) for v in raw]
    except ValueError:
        parsed = raw
    values = sorted(set(parsed), key=lambda v: (isinstance(v, str), v))
    return [_fmt(v) for v in values], np.array([values.index(v) for v in parsed])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{int(v)}" if v.is_integer() and abs(v) < 1e6 else f"{v:g}"
    return str(v)


def _group_mean(values_RxE: np.ndarray, index_R: np.ndarray, count: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.stack([np.nanmean(values_RxE[index_R == i], axis=0) for i in range(count)])


def loss_curves(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path:
    steps = metrics["step"]
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    if axes:
        names, index = _axis_values(rows, axes[0])
        title = _label(axes[0])
    else:
        names, index = ["all runs"], np.zeros(len(rows), int)
        title = None
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(names)))
    for panel, split, what in zip(panels, ("id", "ood"),
                                  ("training chains (in-distribution)",
                                   "fresh chains (out-of-distribution)")):
        model = _group_mean(metrics[f"eval_loss_{split}"], index, len(names))
        oracle = np.nanmean(metrics[f"oracle_loss_{split}"])
        for i, name in enumerate(names):
            panel.plot(steps, model[i], color=colours[i], label=name, lw=1.8)
        panel.axhline(oracle, color="k", ls="--", lw=1, label="oracle (true chain)")
        panel.set_xscale("log")
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
    y_names, y_index = _axis_values(rows, axes[0])
    if len(axes) >= 2:
        x_names, x_index = _axis_values(rows, axes[1])
        grid = np.full((len(y_names), len(x_names)), np.nan)
        final = np.array([g[np.isfinite(g)][-1] if np.isfinite(g).any() else np.nan
                          for g in gap_RxE])
        for yi in range(len(y_names)):
            for xi in range(len(x_names)):
                sel = (y_index == yi) & (x_index == xi)
                if sel.any():
                    grid[yi, xi] = np.nanmean(final[sel])
        x_label, title = _label(axes[1]), "final OOD loss − oracle loss"
    else:
        grid = _group_mean(gap_RxE, y_index, len(y_names))
        x_names = [str(s) for s in metrics["step"]]
        x_label, title = "training step", "OOD loss − oracle loss over training"
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(x_names) + 3), max(3.5, 0.5 * len(y_names) + 2)))
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="magma_r")
    fig.colorbar(image, ax=ax, label="nats (lower is better)")
    stride = max(1, len(x_names) // 12)
    ax.set_xticks(range(0, len(x_names), stride), x_names[::stride], rotation=45, ha="right")
    ax.set_yticks(range(len(y_names)), y_names)
    ax.set_xlabel(x_label)
    ax.set_ylabel(_label(axes[0]))
    ax.set_title(title + " (mean over seeds)")
    return save(fig, out, "ood_gap_heatmap.png")


def draw_all(out: Path, num_chains: int | None = None) -> list[Path]:
    out = Path(out)
    cfg = cfglib.load(out / results.CONFIG)
    rows = results.read_runs(out)
    metrics = results.read_metrics(out)
    healthy = np.array([r["status"] != "diverged" for r in rows])
    metrics = {k: (np.where(healthy[:, None], v, np.nan) if v.ndim == 2 else v)
               for k, v in metrics.items()}
    keys = cfglib.axis_keys(cfg)
    axes = [a for a in keys if len({r[a] for r in rows}) > 1] or keys
    return FIGURES[cfg.task.name](out, cfg, axes, rows, metrics, num_chains)


# One entry per task: (out, cfg, axes, rows, metrics, num_chains) -> the paths drawn. The task
# modules import the helpers above, so they are imported when their figures are drawn.

def _markov_mixture(out: Path, cfg: cfglib.Config, axes: list[str], rows: list[dict],
                    metrics: dict, num_chains: int | None) -> list[Path]:
    """The loss curves and OOD gap (here) and the phase diagram (`plotting.phases`)."""
    paths = [loss_curves(out, axes, rows, metrics), ood_gap_heatmap(out, axes, rows, metrics)]
    paths += phases.draw(out, num_chains)
    return [p for p in paths if p is not None]


def _sim(out: Path, cfg: cfglib.Config, axes: list[str], rows: list[dict], metrics: dict,
         num_chains: int | None) -> list[Path]:
    """sim: the runs' own configs give each concept's mean and noise."""
    from jaxsim import grid
    from jaxsim.plotting import sim
    return sim.draw(out, axes, rows, metrics, {r.run_id: r for r in grid.expand(cfg)})


def _matrix_completion(out: Path, cfg: cfglib.Config, axes: list[str], rows: list[dict],
                       metrics: dict, num_chains: int | None) -> list[Path]:
    from jaxsim.plotting import completion
    return completion.draw(out, axes, rows, metrics)


def _pcfg(out: Path, cfg: cfglib.Config, axes: list[str], rows: list[dict], metrics: dict,
          num_chains: int | None) -> list[Path]:
    from jaxsim.plotting import pcfg
    return pcfg.draw(out, axes, rows, metrics, cfg.task.grammar)


def _graph_walk(out: Path, cfg: cfglib.Config, axes: list[str], rows: list[dict],
                metrics: dict, num_chains: int | None) -> list[Path]:
    from jaxsim.plotting import graph
    return graph.draw(out, axes, rows, metrics)


def _sae(out: Path, cfg: cfglib.Config, axes: list[str], rows: list[dict], metrics: dict,
         num_chains: int | None) -> list[Path]:
    """concept_geometry and activations: the SAE figures, by the geometry of the concepts."""
    from jaxsim.plotting import sae
    return sae.draw(out, axes, rows, metrics, cfg.task.geometry)


FIGURES: dict[str, Callable[..., list[Path]]] = {
    "markov_mixture": _markov_mixture, "sim": _sim, "matrix_completion": _matrix_completion,
    "pcfg": _pcfg, "graph_walk": _graph_walk, "concept_geometry": _sae, "activations": _sae}
