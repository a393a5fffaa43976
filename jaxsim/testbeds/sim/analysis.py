"""Structured identity mapping (`task.name: sim`): concept learning order, terminal slowing,
swing-by (non-monotonic OOD loss), the partial order of compositions, and the one-layer linear
model against its closed-form gradient flow. Pure numpy on metrics.npz rows (plus the run's
initial weights for the closed form); `analyze` is its entry in `analysis.report`.

Closed form (one-layer f = W x, loss (1/2) E||W x - x||^2, gradient (W - I) A with the
population second moment A = E[z z^T] = diag(a_1, ..., a_s, 0, ...) in concept coordinates,
a_p = mu_p^2 / s + sigma_p^2): gradient flow gives W(t) = I - (I - W0) e^{-A t}, t = lr * step,
so f(W(t); z)_k = (1 - e^{-a_k t}) z_k + sum_i e^{-a_i t} w_ki(0) z_i. Full-batch gradient
descent replaces e^{-a t} by (1 - lr a)^step; SGD adds batch noise to both.

analysis.json (`analyze`, from metrics.npz and the initial weights):
    {"task", "rules": {...}, "tolerance", "summary": {"runs", "analysed", "order_matches_signal",
     "ood_nonmonotonic", "eval_nonmonotonic" (fractions of runs)},
     "runs": [{"run_id", "seed", "axes", "status", "steps": [E], "means", "noises", "signal": [S],
               "t50", "t90", "t99": [S] (None = never), "learn_order", "signal_order": [S],
               "order_matches_signal", "terminal_slowing": [S],
               "ood", "eval": {"rise", "rise_rel", "min_step", "max_step", "nonmonotonic",
                               "initial_loss", "final_loss", "min_loss"},
               "partial_order": {"pairs", "violations_fraction", "final_violations"},
               "closed_form": null or {"flow", "gd": {"max_error", "ood_coords",
                                                      "centre_coords": [S][E]}}}, ...]}
"""
from __future__ import annotations

import functools
import itertools
from pathlib import Path

import jax
import numpy as np

from jaxsim import config as cfglib
from jaxsim import results, training
from jaxsim.analysis.checkpoints import group_specs
from jaxsim.config.schema import SCHEDULES
from jaxsim.models.mlp import end_to_end
from jaxsim.testbeds.sim import task as simtask
from jaxsim.testbeds.sim.task import means_noises
from jaxsim.testbeds.sim.task import composition_bits
from jaxsim.testbeds.sim.objective import bits_name

LEARNED = (0.5, 0.9, 0.99)  # fractions of mu_p at which a concept's coordinate counts as learned
TOLERANCE = 0.01            # a rise above this fraction of (1/2)||x_hat||^2 is non-monotonic
RULES = {
    "learned": "concept p learned at the first evaluation where the output's p-th concept "
               "coordinate on the cluster centre mu_p e_p reaches 0.9 mu_p (t50, t99 likewise)",
    "order": "order_matches_signal: every concept with a strictly larger a_p = mu_p^2/s + "
             "sigma_p^2 is learned no later (t90) than every concept with a smaller one",
    "nonmonotonic": f"max over evaluations of (loss - its running minimum) > {TOLERANCE} x "
                    "(1/2)||x_hat||^2 (the zero map's loss on the OOD point)",
    "partial_order": "pairs u < v of compositions (u != 0, u subset of v) with loss(u) > loss(v) "
                     f"+ {TOLERANCE / 10} x (1/2)||x_hat||^2, as a fraction of pairs x evaluations",
    "terminal_slowing": "(t99 - t90) / (t90 - t50) per concept: ln 10 / ln 5 = 1.43 for pure "
                        "exponential approach from 0; > 1 = the last 9% take longer than the 40% "
                        "before them",
    "closed_form": "one-layer linear runs trained by SGD without weight decay or warm-up: "
                   "flow = gradient flow, gd = full-batch gradient descent, from the run's own "
                   "initial weights; max_error = max |predicted - trained| coordinate / mu_p",
}


def concepts(means_S: np.ndarray, noises_S: np.ndarray) -> np.ndarray:
    """a_p = mu_p^2 / s + sigma_p^2."""
    return means_S ** 2 / len(means_S) + noises_S ** 2


def first_crossing(steps_E: np.ndarray, values_E: np.ndarray, level: float) -> int | None:
    """The first step whose value is >= level (None if never)."""
    hit = np.flatnonzero(values_E >= level)
    return int(steps_E[hit[0]]) if hit.size else None


def learn_times(steps_E, coords_SxE, means_S) -> dict[str, list]:
    """{"t50", "t90", "t99": [S]} first steps where coordinate p reaches that fraction of mu_p."""
    return {f"t{round(100 * f)}": [first_crossing(steps_E, c, f * m)
                                   for c, m in zip(coords_SxE, means_S)] for f in LEARNED}


def order_matches(signal_S: np.ndarray, times_S: list) -> bool | None:
    """True iff a_p > a_q (beyond 1e-9 relative) implies t_p <= t_q; unlearned = infinitely late;
    None if no concept is learned."""
    if all(v is None for v in times_S):
        return None
    t = np.array([np.inf if v is None else v for v in times_S], float)
    for p, q in itertools.permutations(range(len(t)), 2):
        if signal_S[p] > signal_S[q] * (1 + 1e-9) and t[p] > t[q]:
            return False
    return True


def slowing(times: dict) -> list:
    """(t99 - t90) / (t90 - t50) per concept (None if not all reached or t90 == t50)."""
    out = []
    for a, b, c in zip(times["t50"], times["t90"], times["t99"]):
        ok = None not in (a, b, c) and b > a
        out.append((c - b) / (b - a) if ok else None)
    return out


def rise(steps_E: np.ndarray, loss_E: np.ndarray, scale: float) -> dict:
    """The largest rise of a loss curve above its running minimum, relative to `scale`."""
    running = np.minimum.accumulate(loss_E)
    up = loss_E - running
    j = int(np.argmax(up))
    i = int(np.argmin(loss_E[:j + 1]))
    rel = float(up[j] / scale)
    return {"rise": float(up[j]), "rise_rel": rel, "min_step": int(steps_E[i]),
            "max_step": int(steps_E[j]), "nonmonotonic": bool(rel > TOLERANCE),
            "initial_loss": float(loss_E[0]), "final_loss": float(loss_E[-1]),
            "min_loss": float(loss_E.min())}


def partial_order(comp_VxE: dict[str, np.ndarray], num_concepts: int, scale: float) -> dict:
    """Violations of u < v => loss(u) <= loss(v) over every evaluation (u != 0)."""
    bits = composition_bits(num_concepts).astype(bool)
    pairs = [(bits_name(u), bits_name(v)) for u in bits for v in bits
             if u.any() and (u <= v).all() and (u != v).any()]
    eps = TOLERANCE / 10 * scale
    viol_PxE = np.array([comp_VxE[u] > comp_VxE[v] + eps for u, v in pairs])
    return {"pairs": len(pairs), "violations_fraction": float(viol_PxE.mean()),
            "final_violations": [f"{u}>{v}" for (u, v), bad in zip(pairs, viol_PxE[:, -1]) if bad]}


def closed_form(w0_DxD: np.ndarray, rot_DxD: np.ndarray, means_S, noises_S, lr: float,
                steps_E: np.ndarray, discrete: bool = False) -> dict[str, np.ndarray]:
    """Predicted concept coordinates [S, E] of the OOD point and of each cluster centre for the
    one-layer linear model from its initial weights (gradient flow; `discrete`: full-batch GD)."""
    s, dim = len(means_S), w0_DxD.shape[0]
    w0_z = rot_DxD.T @ w0_DxD @ rot_DxD                  # W0 in concept coordinates
    a_S = concepts(np.asarray(means_S, float), np.asarray(noises_S, float))
    decay_SxE = ((1 - lr * a_S[:, None]) ** steps_E[None, :] if discrete
                 else np.exp(-a_S[:, None] * lr * steps_E[None, :]))

    def coords(z_S):
        # f_z = z - (I - W0_z)[:, :s] (e^{-a t} z), read on the first s coordinates
        resid_DxS = (np.eye(dim) - w0_z)[:, :s]
        out_DxE = np.pad(z_S, (0, dim - s))[:, None] - resid_DxS @ (decay_SxE * z_S[:, None])
        return out_DxE[:s]

    ood = coords(np.asarray(means_S, float))
    centres = np.stack([coords(np.eye(s)[p] * means_S[p])[p] for p in range(s)])
    return {"ood_coords": ood, "centre_coords": centres}


def analyze_run(steps_E: np.ndarray, metrics: dict[str, np.ndarray], means_S, noises_S) -> dict:
    """Everything but the closed form, from one run's metric rows (NaN evaluations dropped)."""
    s = len(means_S)
    keep = np.isfinite(metrics["ood_loss_id"])
    steps_E = steps_E[keep]
    row = {k: v[keep] for k, v in metrics.items()}
    signal = concepts(np.asarray(means_S, float), np.asarray(noises_S, float))
    centre_SxE = np.stack([row[f"centre_coord{p}_id"] for p in range(1, s + 1)])
    times = learn_times(steps_E, centre_SxE, means_S)
    scale = 0.5 * float(np.sum(np.square(means_S)))      # (1/2)||x_hat||^2
    t90 = [np.inf if t is None else t for t in times["t90"]]
    comps = {bits_name(v): row[f"comp_loss_{bits_name(v)}_id"] for v in composition_bits(s)}
    return {"means": list(map(float, means_S)), "noises": list(map(float, noises_S)),
            "signal": signal.tolist(), **times,
            "learn_order": [int(p) + 1 for p in np.argsort(t90, kind="stable")],
            "signal_order": [int(p) + 1 for p in np.argsort(-signal, kind="stable")],
            "order_matches_signal": order_matches(signal, times["t90"]),
            "terminal_slowing": slowing(times),
            "ood": rise(steps_E, row["ood_loss_id"], scale),
            "eval": rise(steps_E, row["eval_loss_id"], scale),
            "partial_order": partial_order(comps, s, scale)}


def compare_closed_form(steps_E, metrics: dict[str, np.ndarray], w0_DxD, rot_DxD, means_S,
                        noises_S, lr: float) -> dict:
    """Closed-form predictions and their max error (in units of mu_p) against the trained run."""
    s = len(means_S)
    keep = np.isfinite(metrics["ood_loss_id"])
    steps_E = steps_E[keep]
    measured = {"ood_coords": np.stack([metrics[f"ood_coord{p}_id"][keep] for p in range(1, s + 1)]),
                "centre_coords": np.stack([metrics[f"centre_coord{p}_id"][keep]
                                           for p in range(1, s + 1)])}
    out = {}
    for name, discrete in (("flow", False), ("gd", True)):
        pred = closed_form(w0_DxD, rot_DxD, means_S, noises_S, lr, steps_E, discrete)
        err = max(float(np.max(np.abs(pred[k] - measured[k]) / np.asarray(means_S)[:, None]))
                  for k in pred)
        out[name] = {"max_error": err, **{k: v.tolist() for k, v in pred.items()}}
    return out


def has_closed_form(spec, hparams: dict) -> bool:
    """Plain gradient descent on the one-layer linear model (no decay, no warm-up, a constant
    learning rate)."""
    m, t, hp = spec.model, spec.train, hparams["train"]
    return (m.name == "mlp" and m.num_layers == 1 and t.optimizer == "sgd"
            and hp["weight_decay"] == 0 and hp["warmup_steps"] == 0
            and hp["schedule"] == SCHEDULES.index("constant"))


@functools.partial(jax.jit, static_argnums=1)
def _initial(key, spec, hparams):
    """(W0 [D, D], R [D, D]) of a run: its initial end-to-end map and its rotation."""
    w0 = end_to_end(training.init(key, spec, hparams)["params"], spec.model)
    return w0, simtask.constants(key, spec, hparams)[0]


def _mean(flags: list) -> float | None:
    """Fraction of True among the non-None flags (None if there are none)."""
    known = [f for f in flags if f is not None]
    return float(np.mean(known)) if known else None


def report(specs: dict, rows: list[dict], metrics: dict[str, np.ndarray], runs: dict) -> dict:
    """analysis.json for a sim sweep: one entry per runs.csv row (metrics are in that order);
    `specs` are the shape groups' specs, `runs` the plan's runs by run_id."""
    entries = []
    for i, row in enumerate(rows):
        run = runs[int(row["run_id"])]
        spec = specs[int(row["shape_group"])]
        means, noises = means_noises(run.hparams["task"], spec.task.num_concepts)
        per = {k: v[i] for k, v in metrics.items() if k != "step"}
        steps = metrics["step"][np.isfinite(per["ood_loss_id"])]
        entry = {"run_id": run.run_id, "seed": run.seed, "axes": run.values,
                 "status": row["status"], "steps": steps.tolist()}
        if row["status"] == "diverged":
            entries.append(entry)
            continue
        entry.update(analyze_run(metrics["step"], per, means, noises))
        entry["closed_form"] = None
        if has_closed_form(spec, run.hparams):
            hp = training.as_arrays(run.hparams)
            w0, rot = (np.asarray(a, np.float64) for a in _initial(jax.random.key(run.seed),
                                                                   spec, hp))
            entry["closed_form"] = compare_closed_form(metrics["step"], per, w0, rot, means,
                                                       noises, run.hparams["train"]["lr"])
        entries.append(entry)
    entries.sort(key=lambda e: e["run_id"])
    done = [e for e in entries if "ood" in e]
    summary = {"runs": len(entries), "analysed": len(done),
               "order_matches_signal": _mean([e["order_matches_signal"] for e in done]),
               "ood_nonmonotonic": _mean([e["ood"]["nonmonotonic"] for e in done]),
               "eval_nonmonotonic": _mean([e["eval"]["nonmonotonic"] for e in done])}
    return {"task": "sim", "rules": RULES, "tolerance": TOLERANCE, "summary": summary,
            "runs": entries}


def analyze(out: Path, cfg: cfglib.Config, rows: list[dict], num_sequences: int) -> dict:
    """`jaxsim analyze DIR` for sim: from metrics.npz and each run's initial weights, so it reads
    no checkpoints and draws no analysis sequences (`num_sequences` does not apply)."""
    specs, runs = group_specs(out, rows)
    return report(specs, rows, results.read_metrics(out), runs)
