"""The figure driver: `jaxsim plot DIR` reads a results directory's files and hands them to the
testbed's figures (`Testbed.figures`), which write DIR/figures/*.png. Never re-trains, never
re-analyses: figures that need analysis read DIR/analysis.json (`jaxsim analyze`)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from jaxsim import config as cfglib
from jaxsim import results, testbeds
from jaxsim.testbed import FigureRequest


def draw_all(out: Path, **options) -> list[Path]:
    """Every figure of the sweep in `out`; `options` are the testbed's figure options (e.g.
    num_chains=32), None values dropped."""
    out = Path(out)
    cfg = cfglib.load(out / results.CONFIG)
    testbed = testbeds.of(cfg)
    if testbed.figures is None:
        return []
    rows = results.read_runs(out)
    metrics = results.read_metrics(out)
    healthy = np.array([r["status"] != "diverged" for r in rows])
    if not healthy.any():
        logging.getLogger(__name__).warning(
            f"jaxsim: every run of {out} diverged (NaN or infinite loss; runs.csv status): "
            f"the figures show no results")
    metrics = {k: (np.where(healthy[:, None], v, np.nan) if v.ndim == 2 else v)
               for k, v in metrics.items()}
    keys = cfglib.axis_keys(cfg)
    axes = [a for a in keys if len({r[a] for r in rows}) > 1] or keys
    options = {k: v for k, v in options.items() if v is not None}
    paths = testbed.figures(FigureRequest(out, cfg, axes, rows, metrics, options))
    return [p for p in paths if p is not None]
