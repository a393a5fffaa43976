"""Each run's final results: its metrics at its last evaluation, and the testbed's summary
columns of them (`Testbed.summary_metrics`: metric names and `Derived` columns).

Pure numpy on metrics.npz's arrays ([R, E], NaN where a run has no evaluation): a run's last
evaluation is the last step at which any of its metrics is finite, so a diverged run's final
losses are NaN there (never its last finite value before it diverged, which would read as a
result) while its model-free references (an oracle loss) stay finite.
"""
from __future__ import annotations

import numpy as np

from jaxsim.testbed import Derived, Testbed


def last_evaluation(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """[R] each run's last evaluation column (-1 for a run without one)."""
    arrays = [np.isfinite(v) for k, v in metrics.items() if k != "step" and np.ndim(v) == 2]
    if not arrays:
        return np.zeros(0, int)
    seen_RxE = np.any(np.stack(arrays), axis=0)
    last = seen_RxE.shape[1] - 1 - np.argmax(seen_RxE[:, ::-1], axis=1)
    return np.where(seen_RxE.any(axis=1), last, -1)


def metric_order(groups: list) -> list[str]:
    """The training loop's metric order over shape groups (`grid.Group`): metrics.npz's own
    order depends on whether a chunk was trained or restored, so files follow this one."""
    from jaxsim import training
    return list(dict.fromkeys(n for g in groups for n in training.metric_names(g.spec)))


def final_values(metrics: dict[str, np.ndarray], aliases: dict | None = None,
                 order: list[str] | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(step [R] of each run's last evaluation (-1: none), {metric: value [R] there}), the
    metrics in `order` (then any others, sorted); the testbed's `aliases` (another name of a
    metric) are left out."""
    rank = {n: i for i, n in enumerate(order or [])}
    metrics = dict(sorted(metrics.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    column = last_evaluation(metrics)
    rows = np.arange(len(column))
    at = np.maximum(column, 0)
    values = {k: np.where(column >= 0, np.asarray(v, np.float64)[rows, at], np.nan)
              for k, v in metrics.items()
              if k != "step" and np.ndim(v) == 2 and k not in (aliases or {})}
    steps = np.where(column >= 0, np.asarray(metrics["step"])[at], -1) if len(column) else column
    return steps, values


def summary_columns(testbed: Testbed, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The testbed's summary columns of per-run `values` ({metric: [R]}, any leading shape):
    its named metrics and `Derived` columns, in order, those the values lack skipped; every
    metric when it names none."""
    items = testbed.summary_metrics or tuple(values)
    columns = {}
    for item in items:
        if isinstance(item, Derived):
            try:
                columns[item.name] = np.asarray(item.of(values), np.float64)
            except KeyError:        # a metric this sweep lacks (another model kind, split)
                continue
        elif item in values:
            columns[item] = np.asarray(values[item], np.float64)
    return columns


def fmt_number(value: float) -> str:
    """A CSV cell: float32's precision (7 significant digits), 'nan' for a missing value."""
    return "nan" if not np.isfinite(value) else f"{value:.7g}"


def run_columns(testbed: Testbed, metrics: dict[str, np.ndarray], order: list[str]
                ) -> list[tuple[str, list[str]]]:
    """runs.csv's final-result columns in metrics.npz's run order: `final_step`, then
    `final_<metric>` for every metric (in `order`) and `Derived` summary column, as CSV
    cells."""
    steps, values = final_values(metrics, testbed.metric_aliases, order)
    derived = {k: v for k, v in summary_columns(testbed, values).items() if k not in values}
    columns = [("final_step", [str(int(s)) for s in steps])]
    columns += [(f"final_{name}", [fmt_number(x) for x in v])
                for name, v in {**values, **derived}.items()]
    return columns
