"""An edit study's summary (no JAX): edits.csv averaged per method and distance.

`edits_summary.csv`: one row per method and distance, the means over every run's edits of each
metric column of edits.csv (efficacy, paraphrase, value_prob, shattering, acc_before_* and
acc_after_*; NaN entries, e.g. a kind with no fact among the evaluated ones, are skipped), the
standard error of R over edits (`shattering_se`), and the number of runs and edits.
"""
from __future__ import annotations

from pathlib import Path

from jaxsim.editing import SUMMARY

KEYS = ["method", "distance"]
FIRST = ["efficacy", "efficacy_prob", "paraphrase", "paraphrase_prob", "value_prob", "shattering"]


def table(frame):
    """The summary DataFrame (module doc) of the records `frame`."""
    metrics = [c for c in frame.columns if c in FIRST or c.startswith("acc_")]
    out = frame.groupby(KEYS, sort=False)[metrics].mean().reset_index()
    grouped = frame.groupby(KEYS, sort=False)
    out["shattering_se"] = (grouped.shattering.std() / grouped.shattering.count() ** 0.5).values
    out["runs"] = grouped.run_id.nunique().values
    out["edits"] = grouped.size().values
    return out


def write(out: Path, frame) -> list[str]:
    """Write edits_summary.csv; return readable lines, one per method and distance."""
    summary = table(frame)
    summary.to_csv(out / SUMMARY, index=False)
    lines = [f"mean over {frame.run_id.nunique()} runs' edits (untouched-fact accuracy before "
             f"-> after):"]
    for _, r in summary.iterrows():
        lines.append(f"{r.method:9s} d={int(r.distance):3d}: efficacy {r.efficacy:.2f} "
                     f"(paraphrase {r.paraphrase:.2f}), R {r.shattering:.3f}, accuracy "
                     f"{r.acc_before_all:.3f} -> {r.acc_after_all:.3f}")
    return lines
