"""Which of the four ICL algorithms a model is closest to, and when that is a verdict at all.

The analysis measures KL(algorithm ‖ model) for each algorithm; the closest one "dominates".
Where two algorithms are about as close — early in training, when every algorithm and the
model sit near the uniform prediction, or where unigram retrieval and unigram inference agree
(many chains, long contexts) — the argmin is decided by noise. So a cell is **undecided** unless
the runner-up is more than `MARGIN` farther, relatively, than the winner:

    decided  <=>  KL(runner-up ‖ model) > (1 + MARGIN) * KL(winner ‖ model)

With MARGIN = 0.2 a cell at 0.010 vs 0.012 nats is undecided; the quickstart's N = 512 runs
(0.0106 vs 0.0096 nats at step 1500, fresh chains) are undecided, and its N = 2 runs on
training chains (bigram retrieval 0.017, next 0.27) decided.
The phase diagram applies it to KLs averaged over seeds; the summary to each run's KLs.
analysis.json keeps the plain argmin (`dominant`) and every KL, so any other margin can be
applied to it.
"""
from __future__ import annotations

import numpy as np

MARGIN = 0.2
UNDECIDED, DIVERGED = -1, -2
RULE = (f"decided when the runner-up's KL(algorithm || model) > {1 + MARGIN:g} x the "
        f"winner's, else undecided")


def verdict(kl_xA: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    """[...] the index of the closest algorithm along the last axis, UNDECIDED where the
    runner-up is within `margin` of it, DIVERGED where a distance is not finite."""
    kl = np.asarray(kl_xA, np.float64)
    finite = np.isfinite(kl).all(axis=-1)
    ordered = np.sort(np.where(np.isfinite(kl), kl, np.inf), axis=-1)
    winner = np.argmin(np.where(np.isfinite(kl), kl, np.inf), axis=-1)
    with np.errstate(invalid="ignore"):
        decided = ordered[..., 1] > (1 + margin) * ordered[..., 0]
    return np.where(~finite, DIVERGED, np.where(decided, winner, UNDECIDED))


def name(index: int, algorithms: list[str]) -> str:
    """An algorithm's name, or "undecided" / "diverged"."""
    return {UNDECIDED: "undecided", DIVERGED: "diverged"}.get(int(index)) or \
        algorithms[int(index)].replace("_", " ")


def summary_of_analysis(doc: dict) -> dict[int, dict]:
    """Each run's verdict at its last checkpoint and the longest analysed context, per split
    (`dominant_id`, `dominant_ood`), for the summary table (`Testbed.summary_analysis`)."""
    found = {}
    for run in doc.get("runs", []):
        entry = {}
        for split in doc.get("splits", []):
            kl = np.array(run[split]["kl_alg_to_model"], np.float64)[-1, -1]   # [A]
            entry[f"dominant_{split}"] = name(verdict(kl), doc["algorithms"])
        found[int(run["run_id"])] = entry
    return found
