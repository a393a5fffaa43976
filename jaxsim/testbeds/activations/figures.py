"""Causal-probe figures of SAEs on activations (after `jaxsim analyze`), from analysis.json.

- figures/causal_effects.png: per ground-truth feature (row), for every run, the shift of the
  source model's next-token distribution toward what the feature value says (left) and
  KL(base || intervened) (right), when the feature's best latents are clamped, for the same
  change on random latents (control), and for the whole code of a point of the target value
  (the ceiling).
- figures/feature_latents.png: per feature, the Pearson correlation (colour) of each value's
  best latent with the value's indicator, one row per run.

A diverged run (analysis.json status) is left out; each figure's title names it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsim.plotting import diverged_note, drawable_analysis, save  # noqa: E402
from jaxsim.plotting.styles import outside  # noqa: E402


def _runs(out: Path) -> tuple[dict, list[dict]] | None:
    """analysis.json and its runs with causal probes that did not diverge (None: nothing to
    draw)."""
    doc = drawable_analysis(out)
    if doc is None:
        return None
    runs = [r for r in doc["runs"] if "causal" in r]
    return (doc, runs) if runs and "causal" in doc else None


def _run_label(run: dict, axes: list[str], sep: str = "\n") -> str:
    parts = [f"{a.split('.')[-1]}={run['axes'][a]}" for a in axes if a in run["axes"]]
    return sep.join(parts) or f"run {run['run_id']}"


def _num(x) -> float:
    return np.nan if x is None else float(x)


def effects(out: Path, axes: list[str]) -> Path | None:
    found = _runs(out)
    if found is None:
        return None
    doc, runs = found
    features = doc["causal"]["features"]
    labels = [_run_label(r, axes) for r in runs]
    x = np.arange(len(runs))
    width = max(4.0, 1.0 * len(runs) + 2)     # room for each run's axis values under its bars
    fig, grid = plt.subplots(len(features), 2, figsize=(2 * width, 4.4 * len(features)),
                             squeeze=False)
    for row, name in enumerate(features):
        for panel, metric, what in ((grid[row, 0], "shift", "shift toward the feature's "
                                     "prediction (1 = all the way)"),
                                    (grid[row, 1], "kl", "KL(base || intervened)")):
            for offset, arm, colour, what_arm in (
                    (-0.27, "probe", "tab:blue", "best latents clamped"),
                    (0.0, "control", "tab:grey", "random latents (control)"),
                    (0.27, "patch", "tab:orange", "whole code of a value-b point (ceiling)")):
                vals = [_num(r["causal"][name].get(arm, {}).get(metric)) for r in runs]
                panel.bar(x + offset, vals, 0.27, color=colour, label=what_arm)
            panel.axhline(0, color="k", lw=0.6)
            panel.set_xticks(x)
            panel.set_xticklabels(labels, fontsize=6, rotation=30, ha="right")
            panel.set_title(f"{name}: {what}", fontsize=9)
            panel.grid(alpha=0.3, axis="y")
        outside(grid[row, -1])
    note = diverged_note(doc["diverged"])
    fig.suptitle("causal probes: intervene on feature-correlated latents, splice, read the "
                 "next-token distribution" + (f"\n{note}" if note else ""), fontsize=10)
    return save(fig, out, "causal_effects.png", rect=(0, 0, 1, 0.96))


def feature_latents(out: Path, axes: list[str]) -> Path | None:
    found = _runs(out)
    if found is None:
        return None
    doc, runs = found
    features = doc["causal"]["features"]
    fig, grid = plt.subplots(1, len(features), figsize=(5.5 * len(features),
                                                        1.2 + 0.35 * len(runs)), squeeze=False)
    for panel, name in zip(grid[0], features):
        corr = np.array([[_num(v) for v in r["causal"][name]["corr"]] for r in runs])
        seen = np.array(runs[0]["causal"][name]["count"]) > 0
        image = panel.imshow(corr[:, seen], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        panel.set_xticks(range(int(seen.sum())))
        panel.set_xticklabels(np.flatnonzero(seen), fontsize=7)
        panel.set_yticks(range(len(runs)))
        panel.set_yticklabels([_run_label(r, axes, ", ") for r in runs], fontsize=7)
        panel.set_xlabel(f"value of {name}")
        panel.set_title(f"{name}: corr of the best latent with each value", fontsize=9)
        fig.colorbar(image, ax=panel, shrink=0.8, label="Pearson correlation")
    note = diverged_note(doc["diverged"])
    if note:
        fig.suptitle(note, fontsize=9)
    return save(fig, out, "feature_latents.png", rect=(0, 0, 1, 0.93) if note else (0, 0, 1, 1))


def draw(out: Path, axes: list[str]) -> list[Path]:
    return [p for p in (effects(out, axes), feature_latents(out, axes)) if p is not None]
