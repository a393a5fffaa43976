"""`jaxsim analyze DIR` for concept_images: concept-space trajectories, learning steps and the
elicitation of the held-out class, per run and saved checkpoint (the compiled part in
`generate.py`; here numpy on its outputs).

Concept coordinates. Each generated image is read out (pixels: rgb, radius; classifier:
P(blue), P(small)) and placed in the unit square: with the pixel read-out,
    colour = (d - d_red) / (d_blue - d_red),  d = b - r of the read-out colour,
    size   = (rad - rad_big) / (rad_small - rad_big),
where d_red, d_blue, rad_big, rad_small are the same read-outs of the run's rendered training
data (`generate.references`: red = classes 0, 1; blue = 2, 3; big = 0, 2; small = 1, 3); with
the classifier, (P(blue), P(small)). Red-big is (0, 0), blue-small (1, 1); 0.5 is the midpoint
between the class means.

RULES names every decision; analysis.json:
    {"task", "rules", "prompts": [P], "num_samples", "sampler", "sample_steps", "success",
     "overprompt",
     "readouts": ["pixels", "classifier"],
     "runs": [{"run_id", "seed", "axes", "status", "steps": [S], "sep_col", "sep_size",
               "trajectory": {readout: [P][S][2]} (median coordinates over the samples of each
                   prompt and checkpoint: one near-blank sample, whose pixel read-out divides by
                   a vanishing contrast, cannot move it),
               "accuracy": {readout: [P][S]} (share of samples in the prompt's target quadrant),
               "learned_step": {"colour", "size"} (pixels), "learned_step_classifier",
               "elicited_step": {"naive", "intervention", "overprompt"} (pixels),
               "elicited_step_classifier", "best_overprompt": alpha of the first success,
               "turn": {"step", "index", "angle_deg", "distance"} (naive blue-small, pixels),
               "readout_agreement": share of samples whose quadrant both read-outs agree on,
               "concept_use": [S][2] (colour, size) ε-MSE ratios wrong / true condition,
               "used_step": {"colour", "size"}}]}
analysis_concepts.npz: run_id [R], steps [R, S], rgb [R, S, P, N, 3], radius [R, S, P, N],
    probs [R, S, P, N, 2], coords [R, S, P, N, 2] (pixels), ref_rgb [R, 4, 3], ref_radius [R, 4],
    concept_use [R, S, 2].
analysis_samples.npz: run_id [R], steps [R, S], images [R, S, P, KEPT, H, W, 3] uint8.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from jaxsim import results
from jaxsim.analysis.checkpoints import chunks, finite, run_entry, tolist
from jaxsim.analysis.driver import map_runs
from jaxsim.testbeds.concept_images import CONCEPTS, SAMPLES, generate

SUCCESS = 0.5            # a prompt elicits its class when this share of samples lands in it
USED = 1.1               # the denoiser uses a concept when the wrong value costs 10% more ε MSE
# DDPM ancestral, respaced to model.sample_steps: on the CPU config's checkpoints DDIM (η = 0)
# kept the pixel noise of the start in its samples (see docs/testbeds/concept_images.md)
SAMPLER = "ddpm"
TARGETS = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [1, 1]] + [[1, 1]] * len(generate.OVERPROMPT))
RULES = {
    "coordinates": "pixels: colour = (d - d_red)/(d_blue - d_red), d = b - r of the read-out "
                   "colour; size = (radius - r_big)/(r_small - r_big); references = the same "
                   "read-outs of the run's rendered training data; classifier: (P(blue), "
                   "P(small)) of an MLP trained on labelled renders of all four classes",
    "accuracy": "share of a prompt's samples in its class's quadrant (colour and size on the "
                "class's side of 0.5)",
    "trajectory": "per prompt and checkpoint the median of the samples' coordinates (each "
                  "concept separately)",
    "learned": "a concept is learned at the first checkpoint from which on every training "
               "class's median coordinate of that concept stays on its class's side of 0.5",
    "elicited": f"blue-small is elicited at the first checkpoint where accuracy >= {SUCCESS} "
                "(naive: its class-mean prompt; intervention: embedding arithmetic; overprompt: "
                "the best of the over-prompts)",
    "concept_use": "the denoiser's use of (colour, size) with no sampling: ε MSE on fixed noised "
                   "training images (levels T/20..T/2) with the other colour (size) class's mean "
                   "in the condition over the ε MSE with the true condition; used_step = the "
                   f"first checkpoint from which it stays >= {USED}",
    "turn": "the checkpoint of the naive blue-small trajectory farthest from the straight line "
            "between its first and last points; angle = change of direction there",
}


def coordinates(rgb: np.ndarray, radius: np.ndarray, ref_rgb_4x3: np.ndarray,
                ref_radius_4: np.ndarray) -> np.ndarray:
    """[..., 2] (colour, size) unit-square coordinates of pixel read-outs."""
    d = rgb[..., 2] - rgb[..., 0]
    ref_d = ref_rgb_4x3[:, 2] - ref_rgb_4x3[:, 0]
    red, blue = ref_d[[0, 1]].mean(), ref_d[[2, 3]].mean()
    big, small = ref_radius_4[[0, 2]].mean(), ref_radius_4[[1, 3]].mean()
    return np.stack([(d - red) / (blue - red), (radius - big) / (small - big)], -1)


def accuracy(coords_SxPxNx2: np.ndarray) -> np.ndarray:
    """[P, S] share of samples in each prompt's target quadrant."""
    hit = (coords_SxPxNx2 > 0.5) == TARGETS[None, :, None, :].astype(bool)
    return hit.all(-1).mean(-1).T


def learned_steps(steps: list, mean_PxSx2: np.ndarray) -> dict:
    """{"colour", "size"}: first checkpoint from which every training class stays on its side."""
    out = {}
    for axis, name in enumerate(("colour", "size")):
        ok_S = np.ones(len(steps), bool)
        for c in range(3):
            side = mean_PxSx2[c, :, axis] > 0.5
            ok_S &= side if TARGETS[c, axis] else ~side
        stays = np.flip(np.logical_and.accumulate(np.flip(ok_S)))
        out[name] = int(steps[int(np.argmax(stays))]) if stays.any() else None
    return out


def used_steps(steps: list, use_Sx2: np.ndarray) -> dict:
    """{"colour", "size"}: first checkpoint from which the concept_use ratio stays >= USED."""
    out = {}
    for axis, name in enumerate(("colour", "size")):
        stays = np.flip(np.logical_and.accumulate(np.flip(use_Sx2[:, axis] >= USED)))
        out[name] = int(steps[int(np.argmax(stays))]) if stays.any() else None
    return out


def first_success(steps: list, acc_S: np.ndarray) -> int | None:
    hit = np.flatnonzero(acc_S >= SUCCESS)
    return int(steps[hit[0]]) if hit.size else None


def elicited(steps: list, acc_PxS: np.ndarray) -> tuple[dict, float | None]:
    over = acc_PxS[generate.FIRST_OVERPROMPT:]
    first = {"naive": first_success(steps, acc_PxS[3]),
             "intervention": first_success(steps, acc_PxS[generate.INTERVENTION]),
             "overprompt": first_success(steps, over.max(0))}
    best = None
    if first["overprompt"] is not None:
        at = steps.index(first["overprompt"])
        best = float(generate.OVERPROMPT[int(np.argmax(over[:, at]))])
    return first, best


def turn(steps: list, path_Sx2: np.ndarray) -> dict:
    """The elbow of a trajectory: the point farthest from the chord first -> last point, and
    the angle between the directions into and out of it."""
    if len(steps) < 3:
        return {"step": None, "index": None, "angle_deg": None, "distance": None}
    a, b = path_Sx2[0], path_Sx2[-1]
    chord = b - a
    rel = path_Sx2 - a
    length = np.linalg.norm(chord)
    dist = (np.abs(chord[0] * rel[:, 1] - chord[1] * rel[:, 0]) / length if length > 0
            else np.linalg.norm(rel, axis=1))
    k = int(np.argmax(dist[1:-1])) + 1
    into, out = path_Sx2[k] - a, b - path_Sx2[k]
    cos = into @ out / max(np.linalg.norm(into) * np.linalg.norm(out), 1e-12)
    return {"step": int(steps[k]), "index": k, "angle_deg": float(np.degrees(np.arccos(
        np.clip(cos, -1, 1)))), "distance": float(dist[k])}


def run_report(steps: list, m: dict) -> dict:
    """Everything per run from its generate.analyze_run outputs (numpy, one run)."""
    refs = m["references"]
    pix = coordinates(m["rgb"], m["radius"], refs["rgb"], refs["radius"])        # [S, P, N, 2]
    clf = m["probs"]
    entry = {"trajectory": {}, "accuracy": {}}
    mid_pix, mid_clf = (np.median(c, axis=2).transpose(1, 0, 2) for c in (pix, clf))
    for name, coords, mid in (("pixels", pix, mid_pix), ("classifier", clf, mid_clf)):
        entry["trajectory"][name] = tolist(mid)
        entry["accuracy"][name] = tolist(accuracy(coords))
    entry["learned_step"] = learned_steps(steps, mid_pix)
    entry["learned_step_classifier"] = learned_steps(steps, mid_clf)
    entry["elicited_step"], entry["best_overprompt"] = elicited(steps, accuracy(pix))
    entry["elicited_step_classifier"], _ = elicited(steps, accuracy(clf))
    entry["turn"] = turn(steps, mid_pix[3])
    entry["concept_use"] = tolist(m["concept_use"])
    entry["used_step"] = used_steps(steps, np.asarray(m["concept_use"]))
    agree = ((pix > 0.5) == (clf > 0.5)).all(-1)
    entry["readout_agreement"] = float(agree.mean())
    entry["reference_rgb"], entry["reference_radius"] = tolist(refs["rgb"]), tolist(refs["radius"])
    return entry, pix


def analyze(out: Path, cfg, rows: list[dict], num_samples: int, steps: int | None = None) -> dict:
    """analysis.json and the two npz files of a concept_images sweep (`num_samples` =
    --sequences: samples per prompt, run and checkpoint)."""
    report, saved = [], []
    for chunk in chunks(out, rows):
        m = jax.device_get(map_runs(generate.analyze_run, chunk, num_samples, SAMPLER,
                                    steps or chunk.spec.model.sample_steps))
        m = jax.tree.map(np.asarray, m)
        for i, run in enumerate(chunk.runs):
            one = jax.tree.map(lambda a: a[i], m)
            entry = run_entry(run, chunk.steps, chunk.rows[i])
            entry.update(sep_col=float(run.hparams["task"]["sep_col"]),
                         sep_size=float(run.hparams["task"]["sep_size"]))
            if chunk.rows[i]["status"] != "diverged":
                more, pix = run_report(list(chunk.steps), one)
                entry.update(more)
            else:
                pix = np.full(one["radius"].shape + (2,), np.nan, np.float32)
            report.append(entry)
            saved.append((run.run_id, np.array(chunk.steps), one, pix))
    report.sort(key=lambda e: e["run_id"])
    saved.sort(key=lambda s: s[0])
    _write(out, saved)
    return {"task": cfg.task.name, "rules": RULES, "prompts": generate.prompt_names(),
            "num_samples": num_samples, "sampler": SAMPLER,
            "sample_steps": steps or cfg.model.sample_steps, "success": SUCCESS,
            "overprompt": list(generate.OVERPROMPT), "readouts": ["pixels", "classifier"],
            "runs": [_finite(e) for e in report]}


def _finite(entry: dict) -> dict:
    """JSON has no NaN: nested lists through `finite`, floats too."""
    return {k: (finite(v) if isinstance(v, list) else
                (None if isinstance(v, float) and not np.isfinite(v) else v))
            for k, v in entry.items()}


def _write(out: Path, saved: list) -> None:
    stack = lambda f: np.stack([f(s) for s in saved])
    concepts = dict(run_id=np.array([s[0] for s in saved]), steps=stack(lambda s: s[1]),
                    rgb=stack(lambda s: s[2]["rgb"]), radius=stack(lambda s: s[2]["radius"]),
                    probs=stack(lambda s: s[2]["probs"]), coords=stack(lambda s: s[3]),
                    ref_rgb=stack(lambda s: s[2]["references"]["rgb"]),
                    ref_radius=stack(lambda s: s[2]["references"]["radius"]),
                    concept_use=stack(lambda s: s[2]["concept_use"]))
    images = stack(lambda s: np.round(np.clip(s[2]["images"], 0, 1) * 255).astype(np.uint8))

    def write_npz(arrays):
        def write(path: Path):
            with open(path, "wb") as f:
                np.savez(f, **arrays)
        return write

    results.atomic_write(out / CONCEPTS, write_npz(concepts))
    results.atomic_write(out / SAMPLES, write_npz(dict(run_id=concepts["run_id"],
                                                       steps=concepts["steps"], images=images)))
