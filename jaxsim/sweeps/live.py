"""The per-evaluation log line of a chunk: what its runs are learning, by axis value.

One mean over a chunk's runs mixes unlike runs (a model that memorises its 2 chains with one
that has not learned 512), so the line shows each metric per value of the axes that vary in
the chunk (mean over the seeds of each value), or, past `MAX_GROUPS` values, its min / median /
max over the runs. The metrics are `train_loss`, the testbed's summary columns
(`Testbed.summary_metrics`, e.g. the gap to the oracle) and then its other metrics; a metric
unchanged since the chunk's first evaluation for every run (an oracle loss on fixed held-out
data) is shown on the first line only and named once when it is dropped. Runs whose losses are
not finite are counted and left out.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxsim.summaries.finals import summary_columns
from jaxsim.testbed import Testbed

MAX_GROUPS = 8


class Groups(NamedTuple):
    """How a chunk's runs are shown: by axis value (`index_R`, one group per value) or, with
    index_R None, as min / median / max over the runs."""
    label: str
    index_R: np.ndarray | None
    count: int


def groups_of(values_R: list[dict], max_groups: int = MAX_GROUPS) -> Groups:
    """The groups of runs whose axis values (`grid.Run.values`, one dict per run) are equal,
    over the axes that vary among them."""
    keys = [k for k in (values_R[0] if values_R else {})
            if len({repr(v[k]) for v in values_R}) > 1]
    if not keys:            # one value of every axis here (a shape group of its own)
        same = ", ".join(f"{k}={_short(v)}" for k, v in (values_R[0] if values_R else {}).items())
        runs = f"{len(values_R)} run{'s' if len(values_R) != 1 else ''}"
        label = f"{same} (mean over {runs})" if same else f"mean over {runs}"
        return Groups(label, np.zeros(len(values_R), int), 1)
    combos = [tuple(v[k] for k in keys) for v in values_R]
    distinct = sorted(set(combos), key=lambda c: tuple((isinstance(x, str), x) for x in c))
    if len(distinct) > max_groups:
        return Groups(f"min/median/max over {len(values_R)} runs", None, 3)
    names = "/".join(",".join(_short(x) for x in c) for c in distinct)
    return Groups(f"{','.join(keys)} {names} (mean over seeds)",
                  np.array([distinct.index(c) for c in combos]), len(distinct))


def _short(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def by_group(values_R: np.ndarray, groups: Groups, healthy_R: np.ndarray) -> str:
    """'v1/v2/...' per group (mean over its healthy runs) or 'min/median/max'."""
    with np.errstate(all="ignore"):
        if groups.index_R is None:
            kept = values_R[healthy_R]
            parts = ([np.nanmin(kept), np.nanmedian(kept), np.nanmax(kept)] if kept.size
                     else [np.nan] * 3)
        else:
            parts = [np.nanmean(values_R[(groups.index_R == g) & healthy_R])
                     if ((groups.index_R == g) & healthy_R).any() else np.nan
                     for g in range(groups.count)]
    return "/".join(f"{p:.4g}" for p in parts)


class LiveLine:
    """Formats a chunk's evaluation lines; remembers its first evaluation to drop the metrics
    that never change (call it once per evaluation, in order)."""

    def __init__(self, testbed: Testbed, values_R: list[dict]):
        self.testbed = testbed
        self.groups = groups_of(values_R)
        self.real = len(values_R)
        self.first: dict[str, np.ndarray] | None = None
        self.first_step = None
        self.dropped: set[str] = set()

    def __call__(self, step: int, row: dict[str, np.ndarray]) -> str:
        real = {k: np.asarray(v)[:self.real] for k, v in row.items()}
        if self.first is None:
            self.first, self.first_step = real, step
        losses = [v for k, v in real.items() if k.startswith(("train", "eval"))]
        healthy_R = (np.isfinite(np.stack(losses)).all(axis=0) if losses
                     else np.ones(self.real, bool))
        shown = {"train_loss": real["train_loss"]} if "train_loss" in real else {}
        shown.update(summary_columns(self.testbed, real))
        shown.update({k: v for k, v in real.items() if k not in shown})
        unchanged = {k for k, v in real.items() if step != self.first_step
                     and np.array_equal(v, self.first[k], equal_nan=True)}
        newly = sorted(unchanged - self.dropped)
        self.dropped = unchanged
        parts = [f"{k} {by_group(v, self.groups, healthy_R)}" for k, v in shown.items()
                 if k not in unchanged]
        line = f"{self.groups.label}  " + "  ".join(parts)
        if newly:
            line += f"  ({', '.join(newly)} unchanged since step {self.first_step}: not repeated)"
        diverged = int((~healthy_R).sum())
        if diverged:
            line += f"  ({diverged} of {self.real} runs diverged: not in the means)"
        return line
