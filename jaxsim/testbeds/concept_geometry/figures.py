"""Sparse-autoencoder figures (concept_geometry), drawn from saved files only.

- figures/sae_curves.png: held-out FVU, L0 and mean best-latent F1 over training, one line per
  run (colour, line style and marker: one swept axis each; seeds share a style).
- figures/sparsity_fidelity.png: per data geometry, the final FVU against L0 (the
  sparsity-fidelity front of each value of the leading axis, e.g. each architecture) and concept
  recovery against L0 (the MCC from analysis.json when present, else the F1).
- figures/concept_l0.png (after `jaxsim analyze`, subspaces): L0 on each concept's points
  against the concept's intrinsic dimension, final checkpoint, one line per run.
- figures/receptive_fields.png (after `jaxsim analyze`, task.dim = 2): per run, the plane
  coloured by the most active latent (white: no latent fires), data points coloured by concept.
- activations: figures/causal_effects.png and feature_latents.png (`plotting/causal.py`).

A diverged run (runs.csv status) is not drawn (its NaN code would read as "no concept
recovered"); each figure's title names it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from jaxsim.testbeds.concept_geometry import FIELDS  # noqa: E402
from jaxsim.plotting import (diverged, diverged_note, drawable_analysis,  # noqa: E402
                             log_scale, save)
from jaxsim.plotting import axis_values as _axis_values  # noqa: E402
from jaxsim.plotting import label as axis_label  # noqa: E402
from jaxsim.plotting.styles import outside, run_styles  # noqa: E402
from jaxsim.testbeds.concept_geometry import LABELS  # noqa: E402


def _label(key: str) -> str:
    return axis_label(key, LABELS)

def _save(fig, out: Path, name: str, title: str | None, lost: list[int]) -> Path:
    """Save, the title followed by the diverged runs left out when there are any."""
    parts = [t for t in (title, diverged_note(lost)) if t]
    if parts:
        fig.suptitle("; ".join(parts), fontsize=9 if title else 10)
    return save(fig, out, name, rect=(0, 0, 1, 0.95) if parts else (0, 0, 1, 1))


def _colours(axes: list[str], rows: list[dict]):
    names, index = _axis_values(rows, axes[0]) if axes else (["all runs"], np.zeros(len(rows), int))
    return names, index, plt.cm.viridis(np.linspace(0, 0.9, len(names)))


def _last(values_RxE: np.ndarray) -> np.ndarray:
    return np.array([v[np.isfinite(v)][-1] if np.isfinite(v).any() else np.nan
                     for v in values_RxE])


def curves(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> Path:
    """One line per run: colour, line style, marker = one swept axis each (seeds alike)."""
    looks = run_styles(rows, axes, LABELS)
    fig, panels = plt.subplots(1, 3, figsize=(15, 4.2))
    for panel, key, what in zip(panels, ("fvu_id", "l0_id", "f1_id"),
                                ("fraction of variance unexplained", "L0 (active latents)",
                                 "mean best-latent F1 over concepts")):
        for r in range(len(rows)):
            panel.plot(metrics["step"], metrics[key][r], lw=1.3, **looks.styles[r])
        log_scale(panel, x=True, y=panel is panels[0])
        panel.set_xlabel("training step")
        panel.set_title(what, fontsize=10)
        panel.grid(alpha=0.3)
    outside(panels[-1], handles=looks.handles)
    return _save(fig, out, "sae_curves.png", None, diverged(rows))


def _geometries(rows: list[dict], cfg_geometry: str) -> tuple[list[str], np.ndarray]:
    values = [r.get("task.geometry", cfg_geometry) for r in rows]
    names = sorted(set(values))
    return names, np.array([names.index(v) for v in values])


def _analysis(out: Path) -> dict | None:
    """analysis.json without its diverged runs (`plotting.drawable_analysis`); None before it."""
    return drawable_analysis(out)


def sparsity_fidelity(out: Path, axes: list[str], rows: list[dict], metrics: dict,
                      geometry: str) -> Path:
    """Per data geometry (row): FVU vs L0 and concept recovery vs L0, one front per value of
    the leading axis (e.g. the architecture), points joined in order of L0."""
    names, index, colours = _colours(axes, rows)
    geos, geo_index = _geometries(rows, geometry)
    l0, fvu = _last(metrics["l0_id"]), _last(metrics["fvu_id"])
    doc = _analysis(out)
    if doc is not None and doc["runs"]:
        key = "mcc_coordinates" if "mcc_coordinates" in doc["runs"][0] else "mcc_concepts"
        by_id = {int(r["run_id"]): r[key][-1] for r in doc["runs"]}
        recovery = np.array([by_id.get(int(r["run_id"]), np.nan) for r in rows], float)
        recovery_name = ("final MCC (latents vs true coordinates)" if key == "mcc_coordinates"
                         else "final MCC (latents vs concept/token indicators)")
    else:
        recovery, recovery_name = _last(metrics["f1_id"]), "final concept F1"
    fig, grid = plt.subplots(len(geos), 2, figsize=(11, 4.2 * len(geos)), squeeze=False)
    for g, geo in enumerate(geos):
        for panel, y, what in ((grid[g, 0], fvu, "final FVU"), (grid[g, 1], recovery,
                                                                 recovery_name)):
            for i, name in enumerate(names):
                sel = np.flatnonzero((index == i) & (geo_index == g) & np.isfinite(l0))
                sel = sel[np.argsort(l0[sel])]
                if sel.size:
                    panel.plot(l0[sel], y[sel], "o-", color=colours[i], label=name, ms=5)
            log_scale(panel, x=True, y=panel is grid[g, 0])
            panel.xaxis.set_minor_formatter(NullFormatter())    # labels at the decades only
            panel.yaxis.set_minor_formatter(NullFormatter())
            panel.set_xlabel("final L0")
            panel.set_ylabel(what)
            panel.set_title(f"{geo}", fontsize=9)
            panel.grid(alpha=0.3)
    outside(grid[0, 1], title=_label(axes[0]) if axes else None)
    return _save(fig, out, "sparsity_fidelity.png", "sparsity-fidelity fronts, one point per run",
                 diverged(rows))


def concept_l0(out: Path, axes: list[str], rows: list[dict]) -> Path | None:
    doc = _analysis(out)
    if doc is None:
        return None
    runs = [r for r in doc["runs"] if "intrinsic_dims" in r]
    if not runs:
        return None
    looks = run_styles(rows, axes, LABELS)
    position = {int(r["run_id"]): i for i, r in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(6, 4.4))
    dims = np.array(runs[0]["intrinsic_dims"], float)
    levels = np.unique(dims)
    for run in runs:
        look = dict(looks.styles[position[int(run["run_id"])]])
        look.setdefault("marker", "o")
        l0 = np.array(run["l0_per_concept"][-1], float)
        mean = [np.nanmean(l0[dims == d]) for d in levels]     # concepts of one dimension
        ax.plot(levels, mean, alpha=0.8, lw=1, **look)
    identity, = ax.plot(levels, levels, "k--", lw=1, label="L0 = intrinsic dim")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("intrinsic dimension of the concept")
    ax.set_ylabel("L0 on the concept's points (final)")
    ax.set_title("does sparsity adapt to the concept? (one line per run)", fontsize=10)
    outside(ax, handles=[*looks.handles, identity])
    ax.grid(alpha=0.3)
    return _save(fig, out, "concept_l0.png", None, doc["diverged"])


def receptive_fields(out: Path, axes: list[str], rows: list[dict], max_runs: int = 12
                     ) -> Path | None:
    path = Path(out) / FIELDS
    if not path.is_file():
        return None
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    by_id = {int(r["run_id"]): r for r in rows}
    lost = diverged(rows)
    keep = ~np.isin(data["run_id"], lost)       # a diverged run's latents are NaN
    data = {k: v[keep] for k, v in data.items()}   # every array has a leading run axis
    if not len(data["run_id"]):
        return None
    count = min(len(data["run_id"]), max_runs)
    cols = min(count, 4)
    fig, grid = plt.subplots(-(-count // cols), cols, figsize=(3.3 * cols, 3.3 * -(-count // cols)),
                             squeeze=False)
    for ax in grid.ravel()[count:]:
        ax.axis("off")
    for i, ax in enumerate(grid.ravel()[:count]):
        winner = data["winner"][i].astype(float)
        winner[winner < 0] = np.nan
        lo_x, hi_x, lo_y, hi_y = data["extent"][i]
        ax.imshow(np.mod(winner, 20), origin="lower", extent=(lo_x, hi_x, lo_y, hi_y),
                  cmap="tab20", vmin=0, vmax=19, interpolation="nearest", aspect="auto")
        pts = data["points"][i][:400]
        ax.scatter(pts[:, 0], pts[:, 1], c=data["concepts"][i][:400], cmap="coolwarm", s=3,
                   edgecolors="none")
        row = by_id.get(int(data["run_id"][i]), {})
        ax.set_title(", ".join(f"{_label(a)}={row.get(a, '?')}" for a in axes[:3]) or
                     f"run {int(data['run_id'][i])}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, out, "receptive_fields.png", "receptive fields: colour = most active "
                 "latent (white = none fires); dots = data by concept", lost)


def draw(out: Path, axes: list[str], rows: list[dict], metrics: dict, geometry: str
         ) -> list[Path]:
    paths = [curves(out, axes, rows, metrics),
             sparsity_fidelity(out, axes, rows, metrics, geometry),
             concept_l0(out, axes, rows), receptive_fields(out, axes, rows)]
    return [p for p in paths if p is not None]
