"""A steering study's summary (no JAX): steering.csv averaged over runs, against random.

`steering_summary.csv`: one row per source-axis value, method, layer, direction and multiplier,
with the means over the runs (and, for random and SAE steering, over their variants) of delta,
shift, toward and side_effect, the number of runs, and `delta_vs_random`: delta minus the random
directions' mean delta at the same layer, direction and multiplier (SAE rows: at the SAE's
layer), signed so that a positive value is an effect in the intended direction beyond random.
"""
from __future__ import annotations

from pathlib import Path

SUMMARY = "steering_summary.csv"
KEYS = ["method", "layer", "direction", "multiplier"]
VALUES = ["delta", "shift", "toward", "side_effect"]


def table(frame, axes: list[str]):
    """The summary DataFrame (module doc) of the records `frame`."""
    per_run = frame.groupby(axes + KEYS + ["run_id"], as_index=False)[VALUES].mean()
    out = per_run.groupby(axes + KEYS, as_index=False).agg(
        **{v: (v, "mean") for v in VALUES}, runs=("run_id", "nunique"))
    rand = out[out.method == "random"][axes + KEYS[1:] + ["delta"]].rename(
        columns={"delta": "random_delta"})
    out = out.merge(rand, on=axes + KEYS[1:], how="left")
    sign = out.direction.map({"promote": 1.0, "suppress": -1.0})
    out["delta_vs_random"] = sign * (out["delta"] - out["random_delta"])
    return out.drop(columns="random_delta")


def write(out: Path, frame, axes: list[str]) -> list[str]:
    """Write steering_summary.csv; return readable lines: per method and layer, delta (nats)
    and its excess over random at the multiplier nearest 1, promoting and suppressing, over all
    runs."""
    import numpy as np
    summary = table(frame, axes)
    summary.to_csv(out / SUMMARY, index=False)
    unit = min(frame.multiplier.unique(), key=lambda m: abs(np.log(m)))
    at_one = table(frame.assign(**{a: "" for a in axes}), axes)
    at_one = at_one[(at_one.multiplier == unit) & (at_one.method != "random")]
    lines = [f"at multiplier {unit:g}, mean over {frame.run_id.nunique()} runs:"]
    for (method, layer), part in at_one.groupby(["method", "layer"]):
        cells = []
        for direction in ("promote", "suppress"):
            row = part[part.direction == direction]
            if not row.empty:
                r = row.iloc[0]
                cells.append(f"{direction} Δ {r.delta:+.2f} ({r.delta_vs_random:+.2f} beyond "
                             f"random), {r.toward:.0%} moved, side {r.side_effect:+.3f}")
        lines.append(f"{method:6s} L{layer}: " + "; ".join(cells))
    return lines
