"""Formal-language figures (task pcfg), drawn from saved files only.

- figures/loss_curves.png: held-out loss (sentence and EOS targets) and the model's probability
  mass on legal next tokens over training, one line per run (colour = grammar, line style and
  marker = the other swept axes; seeds share a style; the key beside the panels).
- figures/grammaticality.png (after `jaxsim analyze`): share of the model's own samples that are
  grammatical, and share of sampled tokens that are legal, at every saved checkpoint.
- figures/sample_lengths.png (after `jaxsim analyze`): sentence lengths of the final models'
  grammatical samples against exact samples of the grammar (same length cap), per grammar.

A diverged run (runs.csv status) is not drawn (its samples of NaN logits would read as "no
grammatical sentence"); each figure's title names it.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsim.plotting.styles import outside, run_styles  # noqa: E402
from jaxsim.testbeds.pcfg import LABELS, SAMPLES  # noqa: E402
from jaxsim.plotting import (diverged, diverged_note, drawable_analysis,  # noqa: E402
                             log_scale, save)

COLOURS = {"dyck2": "tab:blue", "expr": "tab:orange", "english": "tab:green"}


def _looks(rows: list[dict], axes: list[str], names: list[str]) -> tuple[list[dict], list]:
    """Per run: colour = its grammar, line style / marker = the other swept axes (seeds share
    a style); the key's handles."""
    from matplotlib.lines import Line2D
    rest = [a for a in axes if a != "task.grammar"]
    looks = run_styles(rows, rest, LABELS, channels=("ls", "marker"))
    styles = [dict(s, color=COLOURS[g]) for s, g in zip(looks.styles, names)]
    grammars = [Line2D([], [], color="none", label="grammar")]
    grammars += [Line2D([], [], color=COLOURS[g], label=f"  {g}") for g in dict.fromkeys(names)]
    return styles, grammars + looks.handles


def _grammars(rows: list[dict], default: str) -> list[str]:
    return [r.get("task.grammar", default) for r in rows]


def loss_curves(out: Path, axes, rows, metrics, grammar: str) -> Path:
    steps, names = metrics["step"], _grammars(rows, grammar)
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2))
    styles, handles = _looks(rows, axes, names)
    for r, row in enumerate(rows):
        panels[0].plot(steps, metrics["eval_loss_id"][r], lw=1.4, **styles[r])
        panels[1].plot(steps, metrics["legal_mass_id"][r], lw=1.4, **styles[r])
    panels[0].set_ylabel("next-token cross-entropy (nats, sentence + EOS)")
    panels[1].set_ylabel("probability mass on legal next tokens")
    panels[1].set_ylim(top=1.005)
    for p, title in zip(panels, ("held-out loss", "legal next-token mass")):
        log_scale(p, x=True)
        p.set_xlabel("training step")
        p.set_title(title, fontsize=10)
        p.grid(alpha=0.3)
    outside(panels[1], handles=handles, title="one line per run; seeds share a style")
    return _save(fig, out, "loss_curves.png", diverged(rows))


def _save(fig, out: Path, name: str, lost: list[int]) -> Path:
    """Save, with a title naming the diverged runs left out when there are any."""
    note = diverged_note(lost)
    if note:
        fig.suptitle(note, fontsize=9)
    return save(fig, out, name, rect=(0, 0, 1, 0.94) if note else (0, 0, 1, 1))


def grammaticality(out: Path, doc: dict, axes, rows) -> Path:
    position = {int(r["run_id"]): i for i, r in enumerate(rows)}
    grammar_of = {int(r["run_id"]): r["grammar"] for r in doc["runs"]}
    fallback = next(iter(grammar_of.values()), "dyck2")
    styles, handles = _looks(rows, axes, [grammar_of.get(int(r["run_id"]), fallback)
                                          for r in rows])
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for run in doc["runs"]:
        style = dict(styles[position[run["run_id"]]], lw=1.4)
        style.setdefault("marker", "o")
        style.setdefault("ms", 3)
        steps = np.maximum(run["steps"], 1)
        panels[0].plot(steps, np.array(run["grammatical"], float), **style)
        panels[1].plot(steps, np.array(run["legal_tokens"], float), **style)
    for p, title in zip(panels, (f"grammatical samples (of {doc['num_samples']}, temperature 1)",
                                 "legal tokens in samples (up to EOS)")):
        log_scale(p, x=True)
        p.set_xlabel("training step")
        p.set_title(title, fontsize=10)
        p.grid(alpha=0.3)
    panels[0].set_ylabel("share")
    panels[0].set_ylim(-0.02, 1.02)
    if doc["runs"]:
        outside(panels[1], handles=handles, title="one line per run; seeds share a style")
    return _save(fig, out, "grammaticality.png", doc["diverged"])


def sample_lengths(out: Path, lost: list[int]) -> Path:
    with np.load(out / SAMPLES) as f:
        grammar, truth = f["grammar"], f["grammar_lengths"]
        grammatical, lengths = f["grammatical"], f["sample_lengths"]
        grammatical = grammatical & ~np.isin(f["run_id"], lost)[:, None]   # [R, samples]
    kinds = list(dict.fromkeys(grammar.tolist()))
    fig, panels = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.8), squeeze=False)
    for panel, g in zip(panels[0], kinds):
        sel = grammar == g
        model = lengths[sel][grammatical[sel]].tolist()
        cap = max(int(truth[sel].max()), max(model, default=0)) + 1
        bins = np.arange(0, cap + 2) - 0.5
        panel.hist(truth[sel].ravel(), bins=bins, density=True, alpha=0.5, color="k",
                   label=f"grammar (mean {truth[sel].mean():.1f})")
        if model:
            panel.hist(model, bins=bins, density=True, histtype="step", lw=1.8,
                       color=COLOURS[g], label=f"model, grammatical (mean {np.mean(model):.1f})")
        panel.set_title(f"{g}: sentence length", fontsize=10)
        panel.set_xlabel("tokens")
        panel.set_ylabel("share of sentences")
        outside(panel, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return _save(fig, out, "sample_lengths.png", lost)


def draw(out: Path, axes: list[str], rows: list[dict], metrics: dict, grammar: str) -> list[Path]:
    paths = [loss_curves(out, axes, rows, metrics, grammar)]
    doc = drawable_analysis(out, "pcfg")
    if doc is not None:
        paths.append(grammaticality(out, doc, axes, rows))
        if (out / SAMPLES).is_file():
            paths.append(sample_lengths(out, doc["diverged"]))
    return paths
