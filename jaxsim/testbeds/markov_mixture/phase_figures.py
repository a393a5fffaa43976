"""markov_mixture's phase figures, from DIR/analysis.json (after `jaxsim analyze`).

- figures/phase_diagram.png: the closest algorithm (colour) per group of runs (a row per value
  of the swept axes: task diversity N, and any other axis) over training step (at the longest
  analysed context) and over context length (at the last checkpoint), for training-chain (id)
  and fresh-chain (ood) contexts. KL(algorithm ‖ model) is averaged over seeds first; a cell
  whose runner-up is within `verdicts.MARGIN` of the winner is "undecided" (hatched white), one
  whose every run diverged grey. Cells sit at their true positions on log axes: each saved
  checkpoint (each analysed context length) is a tick, its cell reaching halfway (in log) to
  its neighbours.
- figures/algorithm_distances.png: KL(algorithm ‖ model) of each algorithm over training for one
  group (solid; by default the middle N of those with a run that did not diverge), and the
  fitted mixture weights (dashed), at the longest analysed context; a point per saved step.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from jaxsim.plotting import fmt, label, save  # noqa: E402
from jaxsim.plotting.styles import outside  # noqa: E402
from jaxsim.testbeds.markov_mixture import LABELS  # noqa: E402
from jaxsim.testbeds.markov_mixture.verdicts import (DIVERGED, MARGIN, UNDECIDED,  # noqa: E402
                                                     verdict)

AXIS = "task.num_chains"
DIVERGED_COLOUR = "#bbbbbb"
COLOURS = {"unigram_retrieval": "#4477aa", "bigram_retrieval": "#66ccee",
           "unigram_inference": "#ee6677", "bigram_inference": "#ccbb44"}
UNDECIDED_CODE = len(COLOURS)        # the colour index of an undecided cell (white, hatched)


def groups(doc: dict, split: str, key: str) -> tuple[list[dict], np.ndarray, list[int]]:
    """(each group's axis values, its runs' mean of `key` [groups, ...], its seed count): the
    runs of equal axis values (all swept axes, N first), their seeds averaged. Only runs saved
    at the same steps as the first are drawn (a train.steps axis gives other step grids)."""
    runs = [r for r in doc["runs"] if r["steps"] == doc["runs"][0]["steps"]]
    keys = [AXIS] + sorted(k for k in runs[0]["axes"] if k != AXIS)

    def value_of(run):
        return tuple(_number(run["axes"][k]) for k in keys)

    values = sorted({value_of(r) for r in runs}, key=lambda v: tuple((isinstance(x, str), x)
                                                                     for x in v))
    means, seeds = [], []
    for v in values:
        members = [np.array(r[split][key], dtype=float) for r in runs if value_of(r) == v]
        with np.errstate(all="ignore"):
            means.append(np.nanmean(np.stack(members), axis=0))
        seeds.append(len(members))
    return [dict(zip(keys, v)) for v in values], np.stack(means), seeds


def _number(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def group_label(values: dict, short: bool = True) -> str:
    """'N = 32' or 'N = 32, train.lr = 0.001' (the other axes by their readable names)."""
    parts = [f"N = {fmt(values[AXIS])}"] if short else [f"{label(AXIS, LABELS)} = "
                                                        f"{fmt(values[AXIS])}"]
    parts += [f"{label(k, LABELS)} = {fmt(v)}" for k, v in values.items() if k != AXIS]
    return ", ".join(parts)


def log_edges(x: np.ndarray) -> np.ndarray:
    """[n + 1] cell edges on a log axis around positive, ascending positions `x` [n]: halfway
    (geometric mean) between neighbours, as far beyond the ends as the nearest inner edge."""
    x = np.asarray(x, float)
    if x.size == 1:
        return np.array([x[0] / 2, x[0] * 2])
    inner = np.sqrt(x[:-1] * x[1:])
    return np.concatenate([[x[0] ** 2 / inner[0]], inner, [x[-1] ** 2 / inner[-1]]])


def cell_codes(kl_YxXxA: np.ndarray) -> np.ma.MaskedArray:
    """[Y, X] colour index of each cell: its algorithm (0..3), UNDECIDED_CODE, or masked where
    every run diverged."""
    found = verdict(kl_YxXxA)
    codes = np.where(found == UNDECIDED, UNDECIDED_CODE, found)
    return np.ma.masked_array(codes, mask=found == DIVERGED)


def _phase_panel(ax, kl_YxXxA: np.ndarray, x: list, rows: list[str], x_title: str):
    names = list(COLOURS)
    cmap = ListedColormap([COLOURS[n] for n in names] + ["white"]).with_extremes(
        bad=DIVERGED_COLOUR)
    codes = cell_codes(kl_YxXxA)
    y_edges = np.arange(len(rows) + 1) - 0.5
    ax.pcolormesh(log_edges(x), y_edges, codes, cmap=cmap, vmin=-0.5, vmax=UNDECIDED_CODE + 0.5,
                  edgecolors="face", linewidth=0)
    undecided = np.argwhere(np.asarray(codes.filled(-1)) == UNDECIDED_CODE)
    edges = log_edges(x)
    for yi, xi in undecided:
        ax.add_patch(plt.Rectangle((edges[xi], yi - 0.5), edges[xi + 1] - edges[xi], 1.0,
                                   fill=False, hatch="///", edgecolor="0.7", lw=0))
    ax.set_xscale("log")
    ax.set_xlim(edges[0], edges[-1])
    stride = max(1, -(-len(x) // 8))
    ax.set_xticks(x, minor=True)                     # every saved step / analysed length
    ax.set_xticks(x[::stride], [str(v) for v in x[::stride]], fontsize=8)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", which="minor", length=3)
    ax.plot(x, np.full(len(x), len(rows) - 0.5), "v", color="k", ms=3.5, clip_on=False)
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(f"{x_title} (log scale; ▼ = a cell's own value)")


def phase_figure(doc: dict):
    """The phase-diagram figure (see the module docstring)."""
    steps, lengths = doc["runs"][0]["steps"], doc["context_lengths"]
    fig, axes = plt.subplots(len(doc["splits"]), 2, figsize=(12, 4.2 * len(doc["splits"])),
                             squeeze=False)
    for row, split in zip(axes, doc["splits"]):
        values, kl, seeds = groups(doc, split, "kl_alg_to_model")        # [groups, S, G, A]
        rows = [group_label(v) for v in values]
        what = "training chains" if split == "id" else "fresh chains"
        _phase_panel(row[0], kl[:, :, -1], steps, rows, "training step")
        row[0].set_title(f"{what}: closest algorithm at context {lengths[-1]}", fontsize=10)
        _phase_panel(row[1], kl[:, -1], lengths, rows, "context length")
        row[1].set_title(f"{what}: closest algorithm at step {steps[-1]}", fontsize=10)
    seeds_text = (f"{min(seeds)}" if min(seeds) == max(seeds) else f"{min(seeds)}-{max(seeds)}")
    handles = [Patch(color=c, label=n.replace("_", " ")) for n, c in COLOURS.items()]
    handles.append(Patch(facecolor="white", edgecolor="0.6", hatch="///",
                         label=f"undecided: runner-up within {MARGIN:.0%} of the winner"))
    handles.append(Patch(color=DIVERGED_COLOUR, label="diverged (every run)"))
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=9)
    fig.suptitle(f"closest of four ICL algorithms by KL(algorithm ‖ model), averaged over "
                 f"{seeds_text} seed(s) per row", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    return fig


def phase_diagram(out: Path, doc: dict) -> Path:
    return save(phase_figure(doc), out, "phase_diagram.png", rect=(0, 0.08, 1, 0.97))


def distance_curves(out: Path, doc: dict, num_chains: int | None) -> Path:
    steps = doc["runs"][0]["steps"]
    fig, axes = plt.subplots(1, len(doc["splits"]), figsize=(6 * len(doc["splits"]), 4.2),
                             squeeze=False)
    for ax, split in zip(axes[0], doc["splits"]):
        values, kl, seeds = groups(doc, split, "kl_alg_to_model")
        _, weights, _ = groups(doc, split, "mixture_weights")
        drawable = [i for i in range(len(values)) if np.isfinite(kl[i]).any()] or \
            list(range(len(values)))
        ns = [v[AXIS] for v in values]
        i = ns.index(num_chains) if num_chains in ns else drawable[len(drawable) // 2]
        twin = ax.twinx()
        for a, name in enumerate(doc["algorithms"]):
            ax.plot(steps, kl[i, :, -1, a], "o-", ms=3, color=COLOURS[name], lw=2,
                    label=name.replace("_", " "))
            twin.plot(steps, weights[i, :, -1, a], color=COLOURS[name], lw=1, ls="--")
        ax.set_xscale("log")
        if np.isfinite(kl[i]).any():
            ax.set_yscale("log")
        else:   # a log axis of nothing cannot be drawn
            ax.text(0.5, 0.5, "every run diverged", transform=ax.transAxes, ha="center")
        ax.set_xlabel("training step (a point per saved checkpoint)")
        ax.set_ylabel("KL(algorithm ‖ model), nats (solid)")
        twin.set_ylabel("mixture weight (dashed)")
        twin.set_ylim(0, 1)
        what = "training chains" if split == "id" else "fresh chains"
        ax.set_title(f"{group_label(values[i])}, {what}, context {doc['context_lengths'][-1]}\n"
                     f"mean over {seeds[i]} seed(s)", fontsize=10)
        ax.grid(alpha=0.3)
    outside(axes[0][-1], handles=axes[0][0].get_legend_handles_labels()[0],
            bbox_to_anchor=(1.15, 1.0))
    return save(fig, out, "algorithm_distances.png")


def draw(out: Path, doc: dict, num_chains: int | None) -> list[Path]:
    """Both phase figures, if the analysed runs have a task.num_chains axis."""
    if not doc["runs"] or AXIS not in doc["runs"][0]["axes"]:
        return []
    return [phase_diagram(Path(out), doc), distance_curves(Path(out), doc, num_chains)]
