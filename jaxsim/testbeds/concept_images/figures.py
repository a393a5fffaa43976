"""Figures of a concept_images sweep (`jaxsim plot`), from metrics.npz and, after `jaxsim
analyze`, analysis.json and analysis_samples.npz:

- figures/concept_images_loss.png: ε loss (training and both held-out splits) of every run.
- figures/concept_images_samples.png: a generated sample per prompt (rows) and checkpoint
  (columns), for the first seed of each concept-signal pair (at most 3).
- figures/concept_images_trajectories.png: one panel per concept-signal pair: each class's
  naive-prompt trajectory through concept space (median over samples, mean over seeds; pixel
  read-out), points coloured by step; the intervention's trajectory dashed.
- figures/concept_images_learning_time.png: the step each concept is learned (by the samples'
  two read-outs, and used by the denoiser: `used_step`) against its concept signal (every run
  a point, the mean over seeds a line; never learned: at the top).
- figures/concept_images_elicitation.png: per run, the first step blue-small is elicited by
  naive prompting, the intervention and over-prompting, and the trajectory's turn.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from jaxsim.plotting import diverged, diverged_note, drawable_analysis, log_scale, save  # noqa: E402
from jaxsim.plotting.styles import outside, run_styles, run_title  # noqa: E402
from jaxsim.testbeds.concept_images import LABELS, SAMPLES  # noqa: E402

CLASS_COLOURS = ("#d62728", "#ff9896", "#1f77b4", "#9edae5")
NAMES = ("red-big", "red-small", "blue-big", "blue-small")


def _signal(run: dict) -> tuple:
    return (round(run["sep_col"], 6), round(run["sep_size"], 6))


def _signal_name(sig: tuple) -> str:
    return f"sep_col={sig[0]:g}, sep_size={sig[1]:g}"


def loss(out, axes, rows, metrics) -> Path:
    looks = run_styles(rows, axes, LABELS)
    names = [k for k in ("train_loss", "loss_train_classes", "loss_heldout") if k in metrics]
    fig, panels = plt.subplots(1, len(names), figsize=(4 * len(names) + 1.5, 3.6), squeeze=False,
                               sharey=True)
    lost = set(diverged(rows))
    for ax, name in zip(panels[0], names):
        for i, row in enumerate(rows):
            if int(row["run_id"]) not in lost:
                ax.plot(metrics["step"], metrics[name][i], lw=0.9, alpha=0.8, **looks.styles[i])
        log_scale(ax, y=True)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    panels[0][0].set_ylabel("ε MSE")
    outside(panels[0][-1], handles=looks.handles)
    note = diverged_note(sorted(lost))
    if note:
        fig.suptitle(note, fontsize=9)
    return save(fig, out, "concept_images_loss.png")


def samples(out, doc, rows, axes) -> Path | None:
    path = Path(out) / SAMPLES
    if not path.is_file():
        return None
    with np.load(path) as f:
        run_ids, steps, images = list(f["run_id"]), f["steps"], f["images"]
    picks, seen = [], set()
    for r in doc["runs"]:
        if _signal(r) not in seen and r["run_id"] in run_ids and len(picks) < 3:
            seen.add(_signal(r))
            picks.append(r)
    if not picks:
        return None
    fig, panels = plt.subplots(len(picks), 1, figsize=(8, 4.2 * len(picks)), squeeze=False)
    by_id = {int(r["run_id"]): r for r in rows}
    for ax, r in zip(panels[:, 0], picks):
        i = run_ids.index(r["run_id"])
        imgs = images[i][:, :, 0]                                  # [S, P, H, W, 3]
        cols = np.unique(np.linspace(0, imgs.shape[0] - 1, min(8, imgs.shape[0])).astype(int))
        s, p, h, w, _ = imgs[cols].shape
        mosaic = np.full((p * (h + 1), s * (w + 1), 3), 255, np.uint8)
        for a, k in enumerate(cols):
            for b in range(p):
                mosaic[b * (h + 1):b * (h + 1) + h, a * (w + 1):a * (w + 1) + w] = imgs[k, b]
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_xticks([(w + 1) * a + w / 2 for a in range(s)], [str(steps[i][k]) for k in cols],
                      fontsize=7)
        ax.set_yticks([(h + 1) * b + h / 2 for b in range(p)], doc["prompts"], fontsize=7)
        ax.set_xlabel("training step")
        ax.set_title(run_title(by_id[r["run_id"]], axes, LABELS), fontsize=8)
    return save(fig, out, "concept_images_samples.png")


def _mean_paths(runs: list, readout: str, prompt: int) -> np.ndarray:
    return np.nanmean(np.array([r["trajectory"][readout][prompt] for r in runs], float), axis=0)


def trajectories(out, doc) -> Path:
    groups: dict = {}
    for r in doc["runs"]:
        groups.setdefault(_signal(r), []).append(r)
    keys = sorted(groups)[:6]
    fig, panels = plt.subplots(1, len(keys), figsize=(4.2 * len(keys) + 1, 4.2), squeeze=False)
    points = None
    for ax, key in zip(panels[0], keys):
        runs = groups[key]
        steps = np.array(runs[0]["steps"], float)
        norm = LogNorm(max(steps[0], 1), max(steps[-1], steps[0] + 1))
        for c in range(4):
            path = _mean_paths(runs, "pixels", c)
            ax.plot(path[:, 0], path[:, 1], color=CLASS_COLOURS[c], lw=1.2, label=NAMES[c])
            points = ax.scatter(path[:, 0], path[:, 1], c=steps, cmap="viridis", norm=norm, s=12,
                                zorder=3)
        interv = _mean_paths(runs, "pixels", 4)
        ax.plot(interv[:, 0], interv[:, 1], color="0.3", ls="--", lw=1, label="intervention")
        for c, (x, y) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            ax.scatter([x], [y], marker="*" if c == 3 else "o", s=110, facecolor="none",
                       edgecolor=CLASS_COLOURS[c], zorder=4)
        ax.axhline(0.5, color="0.8", lw=0.6)
        ax.axvline(0.5, color="0.8", lw=0.6)
        ax.set_xlabel("colour (0 red, 1 blue)")
        ax.set_ylabel("size (0 big, 1 small)")
        ax.set_title(f"{_signal_name(key)}\n({len(runs)} seeds; ☆ blue-small, held out)",
                     fontsize=8)
        ax.grid(alpha=0.2)
    outside(panels[0][0], loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    fig.colorbar(points, ax=panels[0][-1], label="step")
    return save(fig, out, "concept_images_trajectories.png")


def learning_time(out, doc) -> Path:
    fig, panels = plt.subplots(1, 2, figsize=(9, 3.8), squeeze=False)
    last = max(max(r["steps"]) for r in doc["runs"])
    for ax, concept, key in zip(panels[0], ("colour", "size"), ("sep_col", "sep_size")):
        for readout, field, marker in (("pixels", "learned_step", "o"),
                                       ("classifier", "learned_step_classifier", "x"),
                                       ("denoiser (concept_use)", "used_step", "s")):
            x = np.array([r[key] for r in doc["runs"]])
            y = np.array([np.nan if r.get(field, {}).get(concept) is None else r[field][concept]
                          for r in doc["runs"]], float)
            never = ~np.isfinite(y)
            ax.scatter(x[~never], y[~never], marker=marker, label=f"{readout} read-out")
            ax.scatter(x[never], np.full(never.sum(), last * 1.15), marker=marker, color="0.5")
            values = np.unique(x)
            means = [np.nanmean(np.where(np.isfinite(y[x == v]), y[x == v], np.nan))
                     if np.isfinite(y[x == v]).any() else np.nan for v in values]
            ax.plot(values, means, lw=1, alpha=0.6)
        ax.axhline(last * 1.15, color="0.8", lw=0.6)
        ax.set_ylim(0, last * 1.25)
        ax.text(0.02, 0.97, "top line: never learned", transform=ax.transAxes, fontsize=7,
                va="top")
        ax.set_xlabel(LABELS[f"task.{key}"])
        ax.set_ylabel(f"step {concept} is learned")
        ax.set_title(f"{concept}: learning time vs concept signal", fontsize=9)
        ax.grid(alpha=0.3)
    outside(panels[0][-1])
    return save(fig, out, "concept_images_learning_time.png")


def elicitation(out, doc, rows, axes) -> Path:
    runs = doc["runs"]
    by_id = {int(r["run_id"]): r for r in rows}
    last = max(max(r["steps"]) for r in runs)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(runs) + 1.8))
    marks = (("naive", "o", "C3"), ("intervention", "s", "C0"), ("overprompt", "^", "C2"))
    for y, r in enumerate(runs):
        for k, (name, marker, colour) in enumerate(marks):
            step = r["elicited_step"][name]
            ax.scatter([last * 1.1 if step is None else step], [y + 0.15 * (k - 1)], marker=marker,
                       facecolor=colour if step is not None else "none", edgecolor=colour,
                       label=name if y == 0 else None, zorder=3)
        if r["turn"]["step"] is not None:
            ax.scatter([r["turn"]["step"]], [y], marker="|", s=200, color="k",
                       label="trajectory turn" if y == 0 else None)
    ax.axvline(last * 1.1, color="0.8", lw=0.6)
    ax.set_xlim(0, last * 1.18)
    ax.set_yticks(range(len(runs)), [run_title(by_id[r["run_id"]], axes, LABELS) for r in runs],
                  fontsize=6)
    ax.set_xlabel(f"first step blue-small is elicited (accuracy >= {doc['success']}); "
                  f"hollow at the right: never")
    ax.grid(alpha=0.3)
    outside(ax)
    return save(fig, out, "concept_images_elicitation.png")


def draw(out: Path, axes: list[str], rows: list[dict], metrics: dict) -> list[Path]:
    paths = [loss(out, axes, rows, metrics)]
    doc = drawable_analysis(out, "concept_images")
    if doc is not None and doc["runs"]:
        doc["runs"] = [r for r in doc["runs"] if "trajectory" in r]
        if doc["runs"]:
            paths += [samples(out, doc, rows, axes), trajectories(out, doc),
                      learning_time(out, doc), elicitation(out, doc, rows, axes)]
    return [p for p in paths if p is not None]
