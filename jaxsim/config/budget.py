"""Making any config short: a `train.steps=N` override that keeps the config valid.

`train.steps` must be a multiple of `train.eval_every`, so the first short try of a config
(`train.steps=150` on one that evaluates every 100 steps) would be refused. When `train.steps` is
overridden and `train.eval_every` is not, the evaluation interval is instead rescaled to keep
about the config's number of evaluations: the divisor of the new step count nearest to
steps / (the config's evaluations), ties to the larger; `sweep.checkpoint_every` (unless
overridden too) is scaled by the same factor, to a multiple of the new interval. Nothing changes
when the new count is already a multiple of the interval, or shorter than it (then the run
evaluates once, at its end: `config.build.resolve`). One log line says what was adjusted.
"""
from __future__ import annotations

import logging

from jaxsim.config.schema import SweepConfig, TrainConfig

log = logging.getLogger(__name__)


def _default(cls: type, name: str) -> int:
    return cls.__dataclass_fields__[name].default


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def nearest_divisor(n: int, target: float) -> int:
    """The divisor of `n` nearest to `target` (ties: the larger)."""
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), -d))


def fit_budget(before: dict, after: dict, overridden: set[str]) -> dict:
    """`after` (the raw config with its overrides applied) with `train.eval_every` and
    `sweep.checkpoint_every` rescaled for an overridden `train.steps` (see the module
    docstring); `before` is the raw config without overrides."""
    if "train.steps" not in overridden or "train.eval_every" in overridden:
        return after
    train_before = before.get("train") or {}
    train_after = after.get("train") or {}
    steps = _int(train_after.get("steps"))
    old_steps = _int(train_before.get("steps", _default(TrainConfig, "steps")))
    every = _int(train_before.get("eval_every", _default(TrainConfig, "eval_every")))
    if None in (steps, old_steps, every) or steps % every == 0 or steps < every:
        return after            # valid, or shorter than one interval: one evaluation at the end
    evaluations = max(1, round(old_steps / every))
    new_every = nearest_divisor(steps, steps / evaluations)
    fitted = {**after, "train": {**train_after, "eval_every": new_every}}
    note = ""
    sweep = after.get("sweep") if isinstance(after.get("sweep"), dict) else {}
    checkpoint = _int(sweep.get("checkpoint_every", _default(SweepConfig, "checkpoint_every")))
    if checkpoint is not None and "sweep.checkpoint_every" not in overridden:
        scaled = max(1, round(checkpoint * new_every / every / new_every)) * new_every
        fitted["sweep"] = {**sweep, "checkpoint_every": scaled}
        note = f", sweep.checkpoint_every {checkpoint} -> {scaled}"
    log.info(f"jaxsim: train.steps={steps} is not a multiple of train.eval_every={every}: "
             f"train.eval_every {every} -> {new_every} ({steps // new_every} evaluations, the "
             f"config had {evaluations}){note}; set train.eval_every to choose")
    return fitted
