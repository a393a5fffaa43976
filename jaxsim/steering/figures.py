"""Steering figures, drawn from steering.csv only (no JAX).

`steering_<behaviour>.png`: one row per value of the source sweep's axes (e.g. each task
diversity), columns: the baseline-referenced log-odds change delta against the multiplier when
promoting and when suppressing (side by side, same scale), the share of prompts moved the
intended way when promoting and when suppressing, and the side effect (held-out loss, steered minus unsteered). One colour per
method, one line style per layer; the random directions are a band (mean +- 2 standard errors
over directions and runs). Each point is the mean over the row's runs, bars +- 1 standard error
over runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"caa": "tab:blue", "iti": "tab:orange", "sae": "tab:green", "random": "grey"}
STYLES = ["-", "--", ":", "-."]
PANELS = (("delta", "promote", "Δ log-odds (nats), promoting"),
          ("delta", "suppress", "Δ log-odds (nats), suppressing"),
          ("toward", "promote", "share of prompts moved up, promoting"),
          ("toward", "suppress", "share of prompts moved down, suppressing"),
          ("side_effect", None, "side effect: Δ held-out loss (nats)\n(o promoting, v suppressing)"))


def _curve(frame, metric: str):
    """(multipliers, mean over runs, standard error over runs) of `metric`."""
    per_run = frame.groupby(["multiplier", "run_id"])[metric].mean().reset_index()
    stats = per_run.groupby("multiplier")[metric].agg(["mean", "std", "count"])
    se = (stats["std"].fillna(0) / np.sqrt(stats["count"])).to_numpy()
    return stats.index.to_numpy(), stats["mean"].to_numpy(), se


def _random_band(ax, frame, metric: str) -> None:
    stats = frame.groupby("multiplier")[metric].agg(["mean", "std", "count"])
    se = stats["std"].fillna(0) / np.sqrt(stats["count"])
    x = stats.index.to_numpy()
    ax.fill_between(x, stats["mean"] - 2 * se, stats["mean"] + 2 * se, color="grey", alpha=0.3,
                    label="random (±2 s.e.)")
    ax.plot(x, stats["mean"], color="grey", lw=1)


def _panel(ax, frame, metric: str, direction: str | None, layers: list) -> None:
    for method, colour in COLOURS.items():
        for li, layer in enumerate(layers):
            part = frame[(frame.method == method) & (frame.layer == layer)]
            if direction:
                part = part[part.direction == direction]
            if part.empty:
                continue
            if method == "random":
                if li == len(layers) - 1:
                    _random_band(ax, frame[(frame.method == "random") & (
                        frame.direction == direction if direction else True)], metric)
                continue
            for d, style in ([(direction, STYLES[li % 4])] if direction else
                             [("promote", STYLES[li % 4]), ("suppress", STYLES[li % 4])]):
                sub = part[part.direction == d]
                x, y, se = _curve(sub, metric)
                marker = "o" if d == "promote" else "v"
                ax.errorbar(x, y, yerr=se, color=colour, ls=style, marker=marker, ms=3,
                            capsize=2, label=f"{method} L{layer}" if d == direction or
                            d == "promote" else None)
    ax.axhline(0.5 if metric == "toward" else 0.0, color="k", lw=0.6)
    ax.set_xscale("log")
    ticks = sorted(frame.multiplier.unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("multiplier")


def draw(out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from jaxsim.steering import RECORDS
    frame = pd.read_csv(out / RECORDS)
    axes = list(frame.columns[2:list(frame.columns).index("step")])   # run_id, seed, axes.., step
    written = []
    for behaviour, part in frame.groupby("behaviour"):
        groups = list(part.groupby(axes)) if axes else [((), part)]
        layers = sorted(part.layer.unique())
        fig, grid = plt.subplots(len(groups), len(PANELS), squeeze=False,
                                 figsize=(4.2 * len(PANELS), 3.2 * len(groups)))
        for row, (values, sub) in enumerate(groups):
            values = values if isinstance(values, tuple) else (values,)
            name = ", ".join(f"{k}={v}" for k, v in zip(axes, values)) or "all runs"
            for col, (metric, direction, title) in enumerate(PANELS):
                ax = grid[row, col]
                _panel(ax, sub, metric, direction, layers)
                ax.set_title(f"{title}\n{name} ({sub.run_id.nunique()} runs)", fontsize=8)
        for pair in ((0, 1), (2, 3)):    # promote and suppress on one scale
            lo = min(grid[r, c].get_ylim()[0] for r in range(len(groups)) for c in pair)
            hi = max(grid[r, c].get_ylim()[1] for r in range(len(groups)) for c in pair)
            for r in range(len(groups)):
                for c in pair:
                    grid[r, c].set_ylim(lo, hi)
        grid[0, 0].legend(fontsize=6, loc="upper left")
        fig.suptitle(f"steering '{behaviour}': likelihood-based effect against the unsteered "
                     f"model (step {int(part.step.max())})", fontsize=10)
        fig.tight_layout()
        path = out / "figures" / f"steering_{behaviour}.png"
        path.parent.mkdir(exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
