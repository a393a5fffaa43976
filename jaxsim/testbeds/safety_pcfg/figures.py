"""Safety testbed figures, drawn from saved files only.

figures/safety_curves.png: per evaluation split (columns), accuracy on the split (top: the whole
output right) and refusal rate (bottom) over training steps, one line per run (colour = the
first swept axis, e.g. the method; line style and marker = the next ones). A staged sweep's
curves start at step 0 from its source runs' last evaluation (`plotting.from_source`).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxsim.plotting import diverged, diverged_note, from_source, save  # noqa: E402
from jaxsim.plotting.styles import outside, run_styles  # noqa: E402
from jaxsim.testbeds.safety_pcfg import LABELS  # noqa: E402
from jaxsim.testbeds.safety_pcfg.task import SPLITS  # noqa: E402

TITLES = {"safe": "safe inputs", "unsafe": "unsafe inputs (in distribution)",
          "jb_duplicate": "attack: duplicate operator tokens", "jb_ood": "attack: OOD operands",
          "jb_competing": "attack: competing objectives"}


def draw(out: Path, axes: list, rows: list, metrics: dict) -> list[Path]:
    metrics = from_source(rows, metrics)
    splits = [s for s in SPLITS if f"refusal_{s}" in metrics]
    if not splits:
        return []
    steps = metrics["step"]
    looks = run_styles(rows, axes, LABELS)
    skip = set(diverged(rows))
    fig, panels = plt.subplots(2, len(splits), figsize=(3.2 * len(splits) + 1.5, 5.6),
                               squeeze=False, sharex=True, sharey=True)
    for c, split in enumerate(splits):
        for r, row in enumerate(rows):
            if int(row["run_id"]) in skip:
                continue
            panels[0, c].plot(steps, metrics[f"accuracy_{split}"][r], lw=1.3, **looks.styles[r])
            panels[1, c].plot(steps, metrics[f"refusal_{split}"][r], lw=1.3, **looks.styles[r])
        panels[0, c].set_title(TITLES[split], fontsize=9)
        panels[1, c].set_xlabel("training step")
    panels[0, 0].set_ylabel("accuracy (whole output right)")
    panels[1, 0].set_ylabel("refusal rate")
    panels[0, 0].set_ylim(-0.03, 1.03)
    if looks.handles:
        outside(panels[0, -1], looks.handles)
    note = diverged_note(sorted(skip))
    fig.suptitle("accuracy and refusal per split" + (f"\n{note}" if note
                                                                          else ""), fontsize=10)
    return [save(fig, out, "safety_curves.png")]
