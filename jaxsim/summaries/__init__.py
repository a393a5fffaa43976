"""Summaries a researcher reads without opening a file: each run's final results (runs.csv's
`final_*` columns) and the table of final results per axis value (summary.csv), printed at the
end of `jaxsim sweep`/`resume` and `analyze`, again by `jaxsim summary DIR`, and two sweeps
side by side by `jaxsim summary DIR1 DIR2`.

The testbed decides what its summary shows (`Testbed.summary_metrics`, metric names and
`Derived` columns; `Testbed.summary_analysis`, final analysis results per run). Modules:
`finals` (per run, pure numpy), `table` (per axis value, summary.csv), `text` (printing).
"""
from __future__ import annotations

from jaxsim.summaries.finals import (final_values, last_evaluation, metric_order, run_columns,
                                     summary_columns)
from jaxsim.summaries.table import SUMMARY, aggregate, of_directory, per_run, write
from jaxsim.summaries.text import compare, render, render_comparison, title

__all__ = ["SUMMARY", "aggregate", "compare", "final_values", "last_evaluation", "metric_order",
           "of_directory",
           "per_run", "render", "render_comparison", "run_columns", "summary_columns", "title",
           "write"]
