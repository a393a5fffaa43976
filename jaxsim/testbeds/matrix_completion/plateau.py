"""Plateau detection on saved loss curves (matrix completion's abrupt learning).

The rule (all on the held-out curves that `jaxsim sweep` saves every `eval_every` steps):
- plateau start: the first evaluation at which the model has reached the copy solution, i.e. the
  all-entry MSE is at most `reach` x the copy baseline's (observed entries copied, masked ones
  predicted as the mean 0) on the same matrices;
- plateau end (the sudden drop): the first evaluation at or after the start at which the
  masked-entry MSE is at most `drop` x the copy baseline's masked MSE (the entry variance);
- plateau length = end - start in steps; if the drop never comes, `dropped` is false, `end` is
  null and `length` is the censored value (last step - start);
- plateau loss: the median all-entry MSE from start to end; final loss: the last all-entry MSE;
- drop width: steps between the masked MSE crossing 0.8 and 0.2 x the copy level (how sudden).
Pure numpy: it reads the metrics, never a model.
"""
from __future__ import annotations

import numpy as np

REACH = 1.5
DROP = 0.5
RULE = (f"start: first eval with all-entry MSE <= {REACH} x copy baseline; end: first eval at or "
        f"after start with masked MSE <= {DROP} x the copy baseline's masked MSE; length = end - "
        f"start (censored at the last step when there is no drop)")


def _first(condition: np.ndarray, start: int = 0) -> int | None:
    hits = np.flatnonzero(condition[start:])
    return int(hits[0]) + start if hits.size else None


def detect(steps: np.ndarray, mse: np.ndarray, mse_masked: np.ndarray, copy_mse: np.ndarray,
           copy_mse_masked: np.ndarray, reach: float = REACH, drop: float = DROP) -> dict:
    """Plateau numbers of one run from its [E] curves (NaN entries = no evaluation)."""
    ok = np.isfinite(mse) & np.isfinite(mse_masked)
    steps, mse, masked = steps[ok], mse[ok], mse_masked[ok]
    copy, copy_masked = np.nanmean(copy_mse), np.nanmean(copy_mse_masked)
    empty = {"start": None, "end": None, "length": None, "dropped": False, "plateau_loss": None,
             "final_loss": None, "final_masked_loss": None, "drop_width": None,
             "copy_loss": float(copy), "copy_masked_loss": float(copy_masked)}
    if not steps.size:
        return empty
    dropped_at = masked <= drop * copy_masked
    start = _first((mse <= reach * copy) | dropped_at)
    result = dict(empty, final_loss=float(mse[-1]), final_masked_loss=float(masked[-1]))
    if start is None:
        return result
    end = _first(dropped_at, start)
    stop = end if end is not None else len(steps) - 1
    result.update(start=int(steps[start]), dropped=end is not None,
                  end=int(steps[end]) if end is not None else None,
                  length=int(steps[stop] - steps[start]),
                  plateau_loss=float(np.median(mse[start:max(stop, start + 1)])))
    high, low = _first(masked <= 0.8 * copy_masked, start), _first(masked <= 0.2 * copy_masked, start)
    if high is not None and low is not None:
        result["drop_width"] = int(steps[low] - steps[high])
    return result
