"""The summary table of a results directory: final results per axis value (mean and spread
over seeds), written as summary.csv.

One row per combination of the swept keys' values (every seed of it together); columns: the
axis keys, `runs` (runs that did not diverge), `diverged`, `step` (the last evaluation), then
per summary column `<name>_mean` and `<name>_std` (pandas' sample standard deviation over the
row's runs, ddof = 1: NaN with one run), or for a column of names (an analysis verdict such as
the dominant algorithm) `<name>` (the most common) and `<name>_share` (the share of the row's
runs that agree). Diverged runs are counted, never averaged.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from jaxsim import config as cfglib
from jaxsim import results, testbeds
from jaxsim.summaries.finals import final_values, metric_order, summary_columns

SUMMARY = "summary.csv"


def per_run(out: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(one row per run: run_id, seed, the axis keys, status, step and every summary column;
    the axis keys; the summary column names) from runs.csv, metrics.npz and, after `jaxsim
    analyze`, analysis.json (the testbed's `summary_analysis`)."""
    out = Path(out)
    cfg = cfglib.load(out / results.CONFIG)
    testbed = testbeds.of(cfg)
    axes = cfglib.axis_keys(cfg)
    rows = pd.DataFrame(results.read_runs(out))
    frame = pd.DataFrame({"run_id": rows["run_id"].astype(int), "seed": rows["seed"].astype(int),
                          **{a: _typed(rows[a]) for a in axes}, "status": rows["status"]})
    metrics = results.read_metrics(out)
    _, groups = results.read_plan(out)
    steps, values = final_values(metrics, testbed.metric_aliases, metric_order(groups))
    columns = summary_columns(testbed, values)
    frame = frame.sort_values("run_id").reset_index(drop=True)   # metrics.npz's run order
    frame["step"] = steps
    for name, v in columns.items():
        frame[name] = v
    names = list(columns)
    doc = results.read_analysis(out)
    if doc is not None and testbed.summary_analysis is not None and doc.get("runs"):
        extra = pd.DataFrame.from_dict(testbed.summary_analysis(doc), orient="index")
        extra = extra.reindex(frame["run_id"]).reset_index(drop=True)
        for name in extra.columns:
            frame[name] = extra[name].to_numpy()
        names += [n for n in extra.columns if n not in names]
    return frame, axes, names


def _typed(column: pd.Series) -> pd.Series:
    """runs.csv's strings as numbers where every value is one (an axis of learning rates)."""
    try:
        return pd.to_numeric(column)
    except (ValueError, TypeError):
        return column


def aggregate(frame: pd.DataFrame, axes: list[str], names: list[str]) -> pd.DataFrame:
    """Per combination of the axes' values: runs, diverged, step, and each column's mean and
    std over its runs that did not diverge (strings: the most common and its share)."""
    keys = list(axes) or ["_all"]
    frame = frame.assign(_all="all runs") if not axes else frame
    text = {n for n in names if any(isinstance(v, str) for v in frame[n].dropna())}
    parts = []
    for value, cell in frame.groupby(keys, sort=True, dropna=False):
        value = value if isinstance(value, tuple) else (value,)
        healthy = cell[cell["status"] != "diverged"]
        row = dict(zip(keys, value))
        row.update(runs=len(healthy), diverged=len(cell) - len(healthy),
                   step=int(cell["step"].max()))
        for name in names:
            row.update(_statistic(name, healthy[name], name in text))
        parts.append(row)
    table = pd.DataFrame(parts)
    return table.drop(columns=["_all"]) if not axes else table


def _statistic(name: str, values: pd.Series, text: bool) -> dict:
    """{name_mean, name_std} of numbers, {name, name_share} of names (None/NaN left out)."""
    present = values.dropna()
    if text:
        if not len(present):
            return {name: None, f"{name}_share": float("nan")}
        counts = present.astype(str).value_counts()
        top = sorted(counts[counts == counts.max()].index)[0]   # ties: alphabetical
        return {name: top, f"{name}_share": counts[top] / len(values)}
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return {f"{name}_mean": numbers.mean(), f"{name}_std": numbers.std()}


def of_directory(out: Path) -> pd.DataFrame:
    """The summary table of the results directory `out` (what summary.csv holds)."""
    frame, axes, names = per_run(out)
    return aggregate(frame, axes, names)


def write(out: Path) -> pd.DataFrame:
    """Compute the summary table from `out`'s files and write it as out/summary.csv."""
    table = of_directory(out)
    results.atomic_write(Path(out) / SUMMARY,
                         lambda p: table.to_csv(p, index=False, float_format="%.7g"))
    return table


def columns_of(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(axis keys, summary column names) of a summary table, from its column names."""
    cols = list(table.columns)
    start = cols.index("runs")
    names = []
    for c in cols[start + 3:]:
        base = c[:-len("_mean")] if c.endswith("_mean") else None
        if base is not None:
            names.append(base)
        elif not c.endswith(("_std", "_share")):
            names.append(c)
    return cols[:start], names

