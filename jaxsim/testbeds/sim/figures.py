"""Figures of a structured-identity-mapping sweep (`task.name: sim`), from metrics.npz (and
analysis.json's closed form when `jaxsim analyze` has run):

- figures/sim_trajectories.png: the OOD output f(x_hat) in concept coordinates (1, 2) over
  training, coloured by step, with the cluster centres and x_hat; per value of the leading axis,
  the run (any seed / other axes) with the largest OOD-loss rise.
- figures/sim_learning_curves.png: each cluster centre's learned coordinate / mu_p over
  training for the same runs, with the closed form (gradient flow) dashed where it applies.
- figures/sim_loss_curves.png: held-out loss and OOD loss (both / (1/2)||x_hat||^2), every run.
- figures/sim_phase.png: fraction of seeds whose OOD loss is non-monotonic (rule in
  `testbeds/sim/analysis.py` RULES, from analysis.json) over the two leading axes, the mean relative rise in each cell.

A diverged run (runs.csv status) is not drawn: the loss curves and the phase diagram name it,
a phase cell whose every run diverged is grey ("diverged"); no figure when every run diverged.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from jaxsim.testbeds.sim.task import concept_signal  # noqa: E402
from jaxsim.plotting import diverged, diverged_note, drawable_analysis, save  # noqa: E402
from jaxsim.plotting import axis_values as _axis_values  # noqa: E402
from jaxsim.plotting import label as axis_label  # noqa: E402
from jaxsim.plotting.styles import outside, run_styles, run_title, wrap_title  # noqa: E402
from jaxsim.testbeds.sim import LABELS  # noqa: E402


def _label(key: str) -> str:
    return axis_label(key, LABELS)


def _per_run(rows, metrics, runs, analysed: dict) -> list[dict]:
    """Each healthy run's steps, metric rows, mu, sigma and, from analysis.json, its OOD rise
    (None before `jaxsim analyze`); NaNs dropped."""
    out = []
    for i, row in enumerate(rows):
        per = {k: v[i] for k, v in metrics.items() if k != "step"}
        keep = np.isfinite(per["ood_loss_id"])
        if row["status"] == "diverged" or not keep.any():
            continue
        means, noises = runs[int(row["run_id"])]
        scale = 0.5 * float(np.sum(means ** 2))
        steps = metrics["step"][keep]
        per = {k: v[keep] for k, v in per.items()}
        entry = analysed.get(int(row["run_id"]), {})
        out.append({"row": i, "run_id": int(row["run_id"]), "steps": steps, "m": per,
                    "means": means, "noises": noises, "scale": scale, "rise": entry.get("ood")})
    return out


def _picks(axes, rows, per_run) -> list[tuple[str, dict]]:
    """(its title: every axis value, run) per value of the leading axis: the run with the
    largest OOD rise."""
    if not axes:
        best = max(per_run, key=_rise)
        return [(run_title(rows[best["row"]], axes, LABELS), best)]
    names, index = _axis_values(rows, axes[0])
    picks = []
    for k, name in enumerate(names[:6]):
        members = [r for r in per_run if index[r["row"]] == k]
        if members:
            best = max(members, key=_rise)
            picks.append((wrap_title(run_title(rows[best["row"]], axes, LABELS)), best))
    return picks


def _rise(run: dict) -> float:
    """The run's OOD rise relative to (1/2)||x_hat||^2 (0 before `jaxsim analyze`)."""
    return run["rise"]["rise_rel"] if run["rise"] else 0.0


def trajectories(out, picks) -> Path:
    fig, panels = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 4), squeeze=False)
    for ax, (label, r) in zip(panels[0], picks):
        m, mu = r["m"], r["means"]
        c2 = m["ood_coord2_id"] if "ood_coord2_id" in m else np.zeros_like(m["ood_coord1_id"])
        points = ax.scatter(m["ood_coord1_id"], c2, c=r["steps"], cmap="viridis", s=8,
                            norm=LogNorm(max(r["steps"][0], 1), r["steps"][-1]))
        ax.plot(m["ood_coord1_id"], c2, color="0.7", lw=0.6, zorder=0)
        ax.scatter([mu[0]], [0], marker="o", s=80, facecolor="none", edgecolor="C0",
                   label="cluster 1")
        if len(mu) > 1:
            ax.scatter([0], [mu[1]], marker="o", s=80, facecolor="none", edgecolor="C1",
                       label="cluster 2")
            ax.scatter([mu[0]], [mu[1]], marker="*", s=140, color="C3", label="OOD x̂")
        ax.set_xlabel("concept coordinate 1 of f(x̂)")
        ax.set_ylabel("concept coordinate 2 of f(x̂)")
        if r["rise"]:
            flag = "non-monotonic" if r["rise"]["nonmonotonic"] else "monotonic"
            what = f"OOD loss {flag} (rise {r['rise']['rise_rel']:.3f})"
        else:
            what = "(`jaxsim analyze` adds the OOD rise)"
        ax.set_title(f"{label}\n{what}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_aspect("equal", adjustable="datalim")
    outside(panels[0][0], loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    fig.colorbar(points, ax=panels[0][-1], label="step")
    return save(fig, out, "sim_trajectories.png")


def learning_curves(out, picks, closed: dict) -> Path:
    fig, panels = plt.subplots(1, len(picks), figsize=(4.2 * len(picks), 3.8), squeeze=False,
                               sharey=True)
    for ax, (label, r) in zip(panels[0], picks):
        a = concept_signal(r["means"], r["noises"])
        for p in range(len(r["means"])):
            y = r["m"][f"centre_coord{p + 1}_id"] / r["means"][p]
            ax.plot(r["steps"], y, color=f"C{p}", lw=1.8,
                    label=f"concept {p + 1}: μ={r['means'][p]:g}, a={a[p]:.3g}")
            cf = closed.get(r["run_id"])
            if cf is not None:
                ax.plot(r["steps"], np.array(cf["flow"]["centre_coords"][p]) / r["means"][p],
                        color=f"C{p}", ls="--", lw=1, label="closed form" if p == 0 else None)
        ax.plot(r["steps"], r["m"]["ood_loss_id"] / r["scale"], color="k", lw=1, alpha=0.6,
                label="OOD loss / ½‖x̂‖²")
        ax.set_xscale("log")
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=8)
        ax.grid(alpha=0.3)
        outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=1)
    panels[0][0].set_ylabel("centre coordinate / μ_p")
    return save(fig, out, "sim_learning_curves.png")


def loss_curves(out, axes, rows, per_run) -> Path:
    """Held-out and OOD loss (rows of panels) of every run; a column per value of the second
    axis (up to 6), colour = the leading axis, line style / marker = the others (seeds share
    a style)."""
    columns_axis = axes[1] if len(axes) > 1 and len({r[axes[1]] for r in rows}) <= 6 else None
    names, column = (_axis_values(rows, columns_axis) if columns_axis
                     else (["all runs"], np.zeros(len(rows), int)))
    looks = run_styles(rows, [a for a in axes if a != columns_axis], LABELS)
    fig, panels = plt.subplots(2, len(names), figsize=(3.6 * len(names) + 1.5, 6.6),
                               squeeze=False, sharex=True, sharey="row")
    for r in per_run:
        look = looks.styles[r["row"]]
        for row, key in enumerate(("eval_loss_id", "ood_loss_id")):
            panels[row, column[r["row"]]].plot(r["steps"], r["m"][key] / r["scale"], lw=0.8,
                                               alpha=0.7, **look)
    for c, name in enumerate(names):
        for row, what in enumerate(("held-out loss (training clusters)", "OOD loss at x̂")):
            ax = panels[row, c]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.set_title(what + (f"\n{_label(columns_axis)} = {name}" if columns_axis else ""),
                         fontsize=9)
        panels[1, c].set_xlabel("training step")
    for row in panels:
        row[0].set_ylabel("loss / ½‖x̂‖²")
    outside(panels[0, -1], handles=looks.handles)
    note = diverged_note(diverged(rows))
    fig.suptitle("every run, seeds in one style" + (f"; {note}" if note else ""), fontsize=9)
    return save(fig, out, "sim_loss_curves.png", rect=(0, 0, 1, 0.96))


def phase(out, axes, rows, per_run, tolerance: float | None) -> Path | None:
    """The share of runs whose OOD loss rises after a minimum (from analysis.json)."""
    if not axes or tolerance is None:
        return None
    y_names, y_index = _axis_values(rows, axes[0])
    x_names, x_index = (_axis_values(rows, axes[1]) if len(axes) > 1
                        else ([""], np.zeros(len(rows), int)))
    frac = np.full((len(y_names), len(x_names)), np.nan)
    mean_rise = np.full_like(frac, np.nan)
    for yi in range(len(y_names)):
        for xi in range(len(x_names)):
            cell = [r for r in per_run if y_index[r["row"]] == yi and x_index[r["row"]] == xi]
            if cell:
                frac[yi, xi] = np.mean([r["rise"]["nonmonotonic"] for r in cell])
                mean_rise[yi, xi] = np.mean([r["rise"]["rise_rel"] for r in cell])
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(x_names) + 2.5),
                                    max(3.2, 0.6 * len(y_names) + 1.8)))
    cmap = plt.get_cmap("Reds").with_extremes(bad="#bbbbbb")
    image = ax.imshow(np.ma.masked_invalid(frac), origin="lower", aspect="auto", cmap=cmap,
                      vmin=0, vmax=1)
    lost = {i for i, r in enumerate(rows) if r["status"] == "diverged"}
    for yi in range(len(y_names)):
        for xi in range(len(x_names)):
            cell = {i for i in range(len(rows)) if y_index[i] == yi and x_index[i] == xi}
            if np.isfinite(frac[yi, xi]):
                ax.text(xi, yi, f"{mean_rise[yi, xi]:.3f}", ha="center", va="center", fontsize=7)
            elif cell and cell <= lost:
                ax.text(xi, yi, "diverged", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="fraction of runs with non-monotonic OOD loss")
    ax.set_xticks(range(len(x_names)), x_names)
    ax.set_yticks(range(len(y_names)), y_names)
    ax.set_xlabel(_label(axes[1]) if len(axes) > 1 else "")
    ax.set_ylabel(_label(axes[0]))
    note = diverged_note(diverged(rows))
    pooled = ", ".join(["seeds", *(_label(a) for a in axes[2:])])
    ax.set_title(f"swing-by: OOD loss rises > {tolerance} ½‖x̂‖² after a minimum\n"
                 f"(runs pooled over {pooled}; cell text: mean rise / ½‖x̂‖²)"
                 + (f"\n{note}" if note else ""), fontsize=9)
    return save(fig, out, "sim_phase.png")


def draw(out: Path, axes: list[str], rows: list[dict], metrics: dict, runs: dict) -> list[Path]:
    doc = drawable_analysis(out, "sim") or {}
    analysed = {e["run_id"]: e for e in doc.get("runs", [])}
    per_run = _per_run(rows, metrics, runs, analysed)
    if not per_run:
        return []
    closed = {run_id: e.get("closed_form") for run_id, e in analysed.items()}
    picks = _picks(axes, rows, per_run)
    paths = [trajectories(out, picks), learning_curves(out, picks, closed),
             loss_curves(out, axes, rows, per_run),
             phase(out, axes, rows, per_run, doc.get("tolerance"))]
    return [p for p in paths if p is not None]
