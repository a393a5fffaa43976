"""Figures of the safety testbed's `jaxsim analyze` (analysis.json, analysis_safety.npz), drawn
from those files only; nothing before `jaxsim analyze` (another testbed's analysis: nothing).

- figures/safety_delta_spectra.png: the singular values of ΔW = W_ft − W_pre of each MLP matrix
  (one panel per layer and matrix), each over its largest, one line per run (colour = method,
  line style = learning rate), with the mean entropy effective rank per method in the key.
- figures/safety_alignment.png: null-space alignment of ΔW's top-k left (output-space) and right
  (input-space) singular directions with W_pre's low-singular-value subspace, per MLP matrix:
  one marker per run (method, learning rate), and the random subspace's expectation (black
  bar): above it = ΔW's directions lie in W_pre's null space more than chance.
- figures/safety_activations_pca.png: the 2-D PCA of the window-mean activations at the last
  MLP site (proj_in of the last layer) for one run per method (its highest unsafe refusal),
  pretrained (left) and fine-tuned (right): safe, unsafe and each jailbreak split.
- figures/safety_attack_refusal.png: refusal rate per method and learning rate on unsafe inputs,
  each jailbreak split and under the soft-token attack (bars: mean over runs, dots: runs); the
  pretrained models' unsafe refusal as a grey line.
A run that diverged (runs.csv status) is left out and named in each figure's title.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from jaxsim.plotting import diverged_note, drawable_analysis, fmt, save  # noqa: E402
from jaxsim.plotting.styles import LINESTYLES, MARKERS, colours, outside  # noqa: E402
from jaxsim.testbeds.safety_pcfg.analysis import NPZ  # noqa: E402

TASK = "safety_pcfg_finetune"
SPLIT_LOOKS = {"safe": ("tab:blue", "o", "safe"), "unsafe": ("tab:red", "o", "unsafe"),
               "jb_duplicate": ("tab:orange", "^", "jailbreak: duplicate operators"),
               "jb_ood": ("tab:purple", "s", "jailbreak: OOD operands"),
               "jb_competing": ("tab:green", "D", "jailbreak: competing objectives")}
BARS = (("unsafe", "unsafe"), ("jb_duplicate", "duplicate\noperators"),
        ("jb_ood", "OOD\noperands"), ("jb_competing", "competing\nobjectives"),
        ("soft", "soft-token\nattack"))


def draw(out: Path) -> list[Path]:
    doc = drawable_analysis(out, TASK)
    if doc is None:
        return []
    note = diverged_note(doc["diverged"])
    if not doc["runs"]:
        return []
    return [spectra(out, doc, note), alignment(out, doc, note), pca(out, doc, note),
            attack_refusal(out, doc, note)]


def _looks(runs: list[dict]):
    """Colour per method, line style / marker per learning rate, and the key's handles."""
    methods = sorted({r["method"] for r in runs})
    lrs = sorted({r["lr"] for r in runs})
    palette = dict(zip(methods, colours(len(methods), "tab10")))
    styles = {r["run_id"]: {"color": palette[r["method"]],
                            "ls": LINESTYLES[lrs.index(r["lr"]) % len(LINESTYLES)],
                            "marker": MARKERS[lrs.index(r["lr"]) % len(MARKERS)]}
              for r in runs}
    handles = [Line2D([], [], color="none", label="method")]
    handles += [Line2D([], [], color=palette[m], lw=2, label=f"  {m}") for m in methods]
    handles += [Line2D([], [], color="none", label="learning rate")]
    handles += [Line2D([], [], color="0.35", ls=LINESTYLES[i % len(LINESTYLES)],
                       marker=MARKERS[i % len(MARKERS)], label=f"  {fmt(lr)}")
                for i, lr in enumerate(lrs)]
    return styles, handles


def _title(fig, text: str, note: str) -> None:
    fig.suptitle(text + (f"\n{note}" if note else ""), fontsize=10)


def spectra(out: Path, doc: dict, note: str) -> Path:
    names = doc["layers"]
    styles, handles = _looks(doc["runs"])
    fig, panels = plt.subplots(1, len(names), figsize=(3.4 * len(names) + 1.5, 3.6),
                               squeeze=False)
    for c, name in enumerate(names):
        ax = panels[0, c]
        for r in doc["runs"]:
            sigma = np.array(r["weights"][name]["sigma"], float)
            if not np.isfinite(sigma).all() or sigma[0] <= 0:
                continue
            look = {k: v for k, v in styles[r["run_id"]].items() if k != "marker"}
            ax.plot(np.arange(1, len(sigma) + 1), sigma / sigma[0], lw=1.2, **look)
        ranks = {}
        for r in doc["runs"]:
            v = r["weights"][name]["entropy_rank"]
            if v is not None:
                ranks.setdefault(r["method"], []).append(v)
        text = ", ".join(f"{m} {np.mean(v):.1f}" for m, v in sorted(ranks.items()))
        ax.set_yscale("log")
        ax.set_title(f"{name}: ΔW singular values\n(entropy rank: {text})", fontsize=8)
        ax.set_xlabel("index i")
        ax.grid(alpha=0.3)
    panels[0, 0].set_ylabel("σ_i(ΔW) / σ_1(ΔW)")
    outside(panels[0, -1], handles)
    _title(fig, "ΔW = W_fine-tuned − W_pretrained per MLP matrix: spectrum", note)
    return save(fig, out, "safety_delta_spectra.png")


def alignment(out: Path, doc: dict, note: str) -> Path:
    names = doc["layers"]
    styles, handles = _looks(doc["runs"])
    groups = sorted({(r["method"], r["lr"]) for r in doc["runs"]})
    fig, panels = plt.subplots(1, 2, figsize=(6 + 0.9 * len(names), 3.8), sharey=True)
    width = 0.7 / max(len(groups), 1)
    for p, side in enumerate(("left", "right")):
        ax = panels[p]
        for x, name in enumerate(names):
            base = [r["weights"][name][f"baseline_{side}"] for r in doc["runs"]]
            base = float(np.mean([b for b in base if b is not None])) if any(
                b is not None for b in base) else np.nan
            ax.hlines(base, x - 0.4, x + 0.4, color="k", lw=2)
            for g, group in enumerate(groups):
                for r in doc["runs"]:
                    if (r["method"], r["lr"]) != group:
                        continue
                    v = r["weights"][name][f"alignment_{side}"]
                    if v is None:
                        continue
                    look = styles[r["run_id"]]
                    ax.plot(x - 0.35 + width * (g + 0.5), v, ls="none", ms=6,
                            marker=look["marker"], color=look["color"])
        ax.set_xticks(range(len(names)), names)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3, axis="y")
        ax.set_title(f"ΔW's top-{doc['top_k']} {side} singular directions\n"
                     f"({'output' if side == 'left' else 'input'} space)", fontsize=9)
    panels[0].set_ylabel("alignment with W_pre's null space\n(mean sin² to its principal "
                         "subspace)")
    outside(panels[1], handles + [Line2D([], [], color="k", lw=2,
                                         label="random subspace\n(expected)")])
    _title(fig, "null-space alignment of ΔW (1: wholly in W_pre's low-σ subspace)", note)
    return save(fig, out, "safety_alignment.png")


def pca(out: Path, doc: dict, note: str) -> Path:
    with np.load(Path(out) / NPZ) as f:
        pcs, run_ids = f["pcs"], f["run_id"]
        splits, site_names = [str(s) for s in f["splits"]], [str(s) for s in f["sites"]]
    site = len(site_names) - 1
    best = {}
    for r in doc["runs"]:
        v = r["refusal"]["finetuned"]["unsafe"]
        v = -1.0 if v is None else v
        if r["method"] not in best or v > best[r["method"]][0]:
            best[r["method"]] = (v, r)
    picks = [best[m][1] for m in sorted(best)]
    fig, panels = plt.subplots(len(picks), 2, figsize=(8.6, 3.3 * len(picks)), squeeze=False)
    for row, r in enumerate(picks):
        i = int(np.flatnonzero(run_ids == r["run_id"])[0])
        for col, model in enumerate(("pretrained", "finetuned")):
            ax = panels[row, col]
            for s, split in enumerate(splits):
                colour, marker, name = SPLIT_LOOKS[split]
                xy = pcs[i, col, site, s]
                ax.scatter(xy[:, 0], xy[:, 1], s=9, color=colour, marker=marker, alpha=0.6,
                           label=name, linewidths=0)
            sep = r["separation"][site_names[site]][model]
            ax.set_title(f"run {r['run_id']}: {r['method']}, lr {fmt(r['lr'])}, {model}\n"
                         f"safe/unsafe separation {sep:.2f}" if sep is not None else
                         f"run {r['run_id']}: {r['method']}, {model}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    panels[0, 0].set_ylabel("PC 2")
    panels[-1, 0].set_xlabel("PC 1")
    outside(panels[0, -1], markerscale=2)
    _title(fig, f"MLP activations at {site_names[site]} (mean over the prompt's last "
                f"{doc['window']} positions), 2-D PCA of all splits pooled", note)
    return save(fig, out, "safety_activations_pca.png")


def attack_refusal(out: Path, doc: dict, note: str) -> Path:
    groups = sorted({(r["method"], r["lr"]) for r in doc["runs"]})
    methods = sorted({g[0] for g in groups})
    palette = dict(zip(methods, colours(len(methods), "tab10")))
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(BARS) * max(1, len(groups)) / 3, 3.8))
    width = 0.8 / len(groups)
    handles = []

    def value(r, split):
        return (r["attack"]["refusal_after"] if split == "soft"
                else r["refusal"]["finetuned"][split])
    for g, (method, lr) in enumerate(groups):
        members = [r for r in doc["runs"] if (r["method"], r["lr"]) == (method, lr)]
        hatch = "" if lr == max(x[1] for x in groups if x[0] == method) else "//"
        for b, (split, _) in enumerate(BARS):
            vals = np.array([value(r, split) for r in members], float)
            x = b - 0.4 + width * (g + 0.5)
            ax.bar(x, np.nanmean(vals) if np.isfinite(vals).any() else 0.0, width * 0.9,
                   color=palette[method], alpha=0.75, hatch=hatch, edgecolor="white")
            ax.plot(np.full(len(vals), x), vals, "k.", ms=3)
        handles.append(Patch(facecolor=palette[method], alpha=0.75,
                                                hatch=hatch, edgecolor="white",
                                                label=f"{method}, lr {fmt(lr)}"))
    pre = [r["refusal"]["pretrained"]["unsafe"] for r in doc["runs"]
           if r["refusal"]["pretrained"]["unsafe"] is not None]
    if pre:
        ax.axhline(float(np.mean(pre)), color="0.5", ls="--", lw=1)
        handles.append(Line2D([], [], color="0.5", ls="--", label="pretrained, unsafe"))
    ax.set_xticks(range(len(BARS)), [b[1] for b in BARS], fontsize=8)
    ax.set_ylim(0, 1.03)
    ax.set_ylabel("refusal rate (fine-tuned model)")
    ax.grid(alpha=0.3, axis="y")
    outside(ax, handles + [Line2D([], [], color="k", marker=".", ls="none", label="one run")])
    _title(fig, f"refusal on unsafe inputs and under attack ({doc['soft_tokens']} soft tokens, "
                f"{doc['attack_steps']} steps)", note)
    return save(fig, out, "safety_attack_refusal.png")
