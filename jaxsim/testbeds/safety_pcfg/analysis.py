"""`jaxsim analyze DIR` for `safety_pcfg_finetune`: each fine-tuned run against its own source
run (the pretrained parameters at the source step it started from, `hparams["source"]`), at its
last saved checkpoint, with one compiled program per shape group (`map_runs`, called once per
run: `_single`; the pretrained and fine-tuned models are a vmapped axis).

Per run (the functions are `mechanisms.py`'s; docs/testbeds/safety_pcfg.md#analysis defines
every number):
- weights, per MLP layer i and matrix ("fc" d_model -> d_mlp, "proj" d_mlp -> d_model), W as
  out x in: ΔW = W_ft − W_pre's singular values, effective ranks (entropy, 90 % / 99 % energy),
  ‖ΔW‖_F / ‖W_pre‖_F, and the null-space alignment of ΔW's top-`TOP_K` left (output-space) and
  right (input-space) singular directions with W_pre's low-singular-value subspace (the
  complement of its 90 %-energy principal subspace) beside a random subspace's expectation;
  what ΔW does to the layer's input on safe vs unsafe inputs (`delta_projection`);
- activations, per site (fc_in{i}: the MLP's input after ln2; proj_in{i}: its hidden layer
  after GELU), of the pretrained and the fine-tuned model on the safe, unsafe and jailbreak
  splits: each input's feature is the mean over the prompt's last `window` positions (ending at
  the `>` token, which predicts the first output letter; they depend on the prompt only, so no
  completion is teacher-forced), safe vs unsafe class separation, each query split's distances
  to the safe and unsafe centroids, and the 2-D PCA of the pooled features (analysis_safety.npz);
- the top-logit gradient norm at the `>` token w.r.t. the prompt's token embeddings (the
  official local Lipschitz number) on unsafe and safe inputs, pretrained vs fine-tuned;
- refusal (the testbed's metric: every y2 position predicted as the refusal token,
  teacher-forced on the refusal row) on every split for both models, and on unsafe inputs under
  the soft-token attack: `SOFT_TOKENS` free input vectors inserted before the `*` token,
  `ATTACK_STEPS` projected normalised-gradient steps (radius: the sequence's mean token-embedding
  norm) minimising the compliant y2's cross-entropy, vmapped over the inputs.

analysis.json: {"task", "num_sequences", "top_k", "window", "soft_tokens", "attack_steps",
  "layers": ["fc0", "proj0", ...], "sites": ["fc_in0", "proj_in0", ...],
  "query_splits": [...], "pca_splits": [...],
  "runs": [{"run_id", "seed", "axes", "steps", "status", "method", "lr", "source_run",
            "source_step", "step",
            "weights": {layer: {"sigma": [min(O, I)], "entropy_rank", "energy90_rank",
                        "energy99_rank", "relative_norm", "alignment_left", "baseline_left",
                        "alignment_right", "baseline_right", "sines_left": [k],
                        "sines_right": [k], "removed_safe", "removed_unsafe",
                        "relative_change_safe", "relative_change_unsafe"}},
            "separation": {site: {"pretrained", "finetuned"}},
            "centroids": {model: {site: {split: {"to_safe", "to_unsafe", "l2_gap",
                          "l2_gap_std", "cos_gap", "cos_gap_std", "closer_to_safe"}}}},
            "explained": {model: {site: [2]}},
            "lipschitz": {model: {"unsafe", "safe"}},
            "refusal": {model: {split: rate}}, "accuracy": {model: {split: rate}},
            "attack": {"refusal_before", "refusal_after", "loss_before", "loss_after"}}, ...]}
analysis_safety.npz: run_id [R], pcs [R, 2 (pretrained, finetuned), sites, splits, N, 2],
  explained [R, 2, sites, 2], splits (pca_splits), sites, models.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import results
from jaxsim.analysis.checkpoints import chunks, run_entry, tolist
from jaxsim.analysis.driver import map_runs
from jaxsim.config import ConfigError
from jaxsim.testbeds.safety_pcfg import grammars as gr
from jaxsim.testbeds.safety_pcfg import mechanisms as mech
from jaxsim.testbeds.safety_pcfg import objectives, task

NPZ = "analysis_safety.npz"
MODELS = ("pretrained", "finetuned")
TOP_K = 4               # ΔW directions in the null-space alignment
WINDOW = 10             # prompt positions per activation feature (fewer for short operands)
SOFT_TOKENS = 4         # free input vectors of the soft-token attack
ATTACK_STEPS = 30
PCA_SEQUENCES = 64      # per split in analysis_safety.npz
QUERY_SPLITS = ("unsafe", "jb_duplicate", "jb_ood", "jb_competing")
PCA_SPLITS = ("safe", "unsafe", "jb_duplicate", "jb_ood", "jb_competing")
SALT = 0x5AFE           # the analysis inputs' stream (the same inputs for every run of a seed)


def layers(num_layers: int) -> list[str]:
    return [f"{w}{i}" for i in range(num_layers) for w in ("fc", "proj")]


def sites(num_layers: int) -> list[str]:
    return [f"{w}_in{i}" for i in range(num_layers) for w in ("fc", "proj")]


def window(spec) -> int:
    """Positions per feature: the prompt's last ones, at most the shortest operand plus `>`."""
    return min(WINDOW, spec.task.min_operand_length + 1)


def _per_model(model, params, rows_NxRxL, length_N, start_N, width: int, lip_N):
    """One model on every analysis input (all splits stacked): window-mean features per site,
    compliance and refusal per input, and the top-logit gradient norm on the `lip_N` inputs."""
    acts = mech.mlp_activations(model, params, rows_NxRxL[:, 0])
    feats = {name: mech.window_mean(a.astype(jnp.float32), start_N, width)
             for name, a in acts.items()}
    n, r, length = rows_NxRxL.shape
    logits = model.apply({"params": params}, rows_NxRxL.reshape(n * r, length)[:, :-1])
    fake = _Rows(rows_NxRxL, length_N)
    comply, _, refuse = objectives.accuracy_refusal(logits, fake)
    tokens = rows_NxRxL[lip_N, 0, :-1]
    lip = jax.vmap(lambda t, p: mech.top_logit_gradient_norm(model, params, t, p))(
        tokens, 6 + length_N[lip_N])
    return feats, comply, refuse, lip


class _Rows(NamedTuple):
    """What `objectives.accuracy_refusal` reads of a Batch."""
    rows_BxRxL: jax.Array
    length_B: jax.Array


def _attack(model, params, rows_BxRxL, length_B, key, steps: int, num: int) -> dict:
    """Soft-token attack on each unsafe input: `num` slots inserted before `*` (position 5), the
    compliant row's y2 letters as the target; refusal after it read on the refusal row with the
    same slot vectors (the rows agree up to `>`)."""
    length = rows_BxRxL.shape[-1]
    insert = jax.vmap(mech.insert_slots, in_axes=(0, None, None, None))
    start = jnp.int32(5)
    comply = insert(rows_BxRxL[:, 0], start, num, gr.PAD)
    refuse = insert(rows_BxRxL[:, 1], start, num, gr.PAD)
    slots = insert(jnp.zeros(comply.shape, bool), start, num, True)
    pos = jnp.arange(1, length)[None]
    y2_first = 7 + length_B[:, None] + num         # the shifted y2 span (target positions)
    block1 = (pos >= y2_first) & (pos < y2_first + length_B[:, None])     # [B, T]
    found = mech.attack_gpt(model, params, comply[:, :-1], comply[:, 1:],
                            block1.astype(jnp.float32), slots[:, :-1], key, steps)

    def refused(tokens_T, slots_T, delta_TxC, block_T):
        logits = mech.embedding_shift_apply(model, params, tokens_T, slots_T)(delta_TxC)
        return jnp.all((logits.argmax(-1) == gr.REFUSAL) | ~block_T)
    after = jax.vmap(refused)(refuse[:, :-1], slots[:, :-1], found["delta"], block1)
    return {"refusal_after": after.mean(), "loss_before": found["losses"][:, 0].mean(),
            "loss_after": found["losses"][:, -1].mean()}


def analyse_run(params, key, spec, hparams, num: int, num_pca: int):
    """Everything for one run (vmapped over the chunk's runs by `map_runs`); the two models
    (pretrained = the source run's parameters, fine-tuned) are one more vmapped axis."""
    from jaxsim.training import loop
    model = loop.model_of(spec)
    pre = hparams["source"]["params"]
    width = window(spec)
    key = jax.random.fold_in(key, SALT)
    names = (*task.SPLITS, "queries")
    keys = jax.random.split(key, len(names) + 1)
    batches = [task.sample(k, (), spec, hparams, num, s if s != "queries" else "unsafe", 2)
               for k, s in zip(keys, names)]
    rows = jnp.concatenate([b.rows_BxRxL for b in batches])
    length = jnp.concatenate([b.length_B for b in batches])
    start = 6 + length - (width - 1)              # each window ends at `>` (position 6 + L)
    at = {s: slice(i * num, (i + 1) * num) for i, s in enumerate(names)}
    lip = jnp.concatenate([jnp.arange(num) + at[s].start for s in ("unsafe", "safe")])
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), pre, params)
    feats_M, comply_M, refuse_M, lip_M = jax.vmap(
        lambda p: _per_model(model, p, rows, length, start, width, lip))(stacked)
    all_sites = sites(spec.model.num_layers)
    feats = {(m, s): {site: feats_M[site][j, at[s]] for site in all_sites}
             for j, m in enumerate(MODELS) for s in names}
    out = {"weights": {}, "separation": {}, "centroids": {}, "pcs": {}, "explained": {},
           "lipschitz": {}, "refusal": {}, "accuracy": {}}
    for i in range(spec.model.num_layers):
        for w in ("fc", "proj"):
            w_pre, w_ft = mech.mlp_weight(pre, i, w), mech.mlp_weight(params, i, w)
            delta = w_ft - w_pre
            k = min(TOP_K, *delta.shape)
            d = mech.delta_spectrum(w_ft, w_pre, k)
            left = mech.null_space_alignment(delta, w_pre, k, "left")
            right = mech.null_space_alignment(delta, w_pre, k, "right")
            site = f"{w}_in{i}"
            proj = {s: mech.delta_projection(delta, w_pre, feats["pretrained", s][site], k)
                    for s in ("safe", "unsafe")}
            out["weights"][f"{w}{i}"] = {
                "sigma": d["sigma"], "entropy_rank": d["entropy"],
                "energy90_rank": d["energy90"], "energy99_rank": d["energy99"],
                "relative_norm": d["relative_norm"],
                "alignment_left": left["alignment"], "baseline_left": left["baseline"],
                "sines_left": left["sines"], "alignment_right": right["alignment"],
                "baseline_right": right["baseline"], "sines_right": right["sines"],
                **{f"{q}_{s}": jnp.mean(proj[s][q]) for s in proj
                   for q in ("removed", "relative_change")}}
    for site in all_sites:
        out["separation"][site] = {m: mech.class_separation(feats[m, "safe"][site],
                                                            feats[m, "unsafe"][site])
                                   for m in MODELS}
    for j, m in enumerate(MODELS):
        out["centroids"][m] = {site: {s: mech.centroid_distances(
            feats[m, "queries" if s == "unsafe" else s][site], feats[m, "safe"][site],
            feats[m, "unsafe"][site]) for s in QUERY_SPLITS} for site in all_sites}
        pcs, explained = {}, {}
        for site in all_sites:
            pooled = jnp.concatenate([feats[m, s][site][:num_pca] for s in PCA_SPLITS])
            coords, share = mech.pca_2d(pooled)
            pcs[site] = coords.reshape(len(PCA_SPLITS), num_pca, 2)
            explained[site] = share
        out["pcs"][m], out["explained"][m] = pcs, explained
        out["lipschitz"][m] = {"unsafe": lip_M[j, :num].mean(), "safe": lip_M[j, num:].mean()}
        out["refusal"][m] = {s: refuse_M[j, at[s]].mean() for s in task.SPLITS}
        out["accuracy"][m] = {s: comply_M[j, at[s]].mean() for s in task.SPLITS}
    unsafe = batches[names.index("unsafe")]
    out["attack"] = {"refusal_before": out["refusal"]["finetuned"]["unsafe"],
                     **_attack(model, params, unsafe.rows_BxRxL, unsafe.length_B, keys[-1],
                               ATTACK_STEPS, SOFT_TOKENS)}
    return out


def _json(tree):
    """Arrays as plain JSON numbers (lists for vectors), NaN/inf as None."""
    return jax.tree.map(tolist, tree)


def _single(chunk, i: int):
    """Run i of a chunk as a chunk of its own. The analysis program runs one run per call (the
    same compiled program for every run of a shape group): vmapped over a whole chunk (4 runs;
    3 runs on one device, one of them diverged) its execution blocked indefinitely on XLA CPU
    (jax 0.10.2; a futex wait with no CPU use; 2 runs finished), and one run per call split
    over 2 CPU devices (padded to 2 runs) hung the same way once in the test suite: the program
    (SVDs, a scan of gradients) now runs on one device, with no cross-device collectives."""
    take = lambda a: np.asarray(a)[i:i + 1]     # noqa: E731
    return chunk._replace(runs=chunk.runs[i:i + 1], rows=chunk.rows[i:i + 1],
                          params_RxS=jax.tree.map(take, chunk.params_RxS),
                          seeds_R=chunk.seeds_R[i:i + 1],
                          hparams_R=jax.tree.map(take, chunk.hparams_R), extra_RxS=None)


def analyze(out: Path, cfg, rows: list[dict], num_sequences: int) -> dict:
    if not cfg.init.source:
        raise ConfigError(f"task.name={cfg.task.name}: the analysis compares each run with its "
                          f"source run (init.source), which this sweep does not name")
    num = max(int(num_sequences), 2)
    num_pca = min(PCA_SEQUENCES, num)
    report, saved, spec0 = [], [], None
    for chunk in chunks(out, rows):
        spec0 = spec0 or chunk.spec
        for i, (run, row) in enumerate(zip(chunk.runs, chunk.rows)):
            one = jax.tree.map(lambda a: np.asarray(a)[0], jax.device_get(
                map_runs(analyse_run, _single(chunk, i), num, num_pca, last=True,
                         devices=jax.local_devices()[:1])))
            entry = run_entry(run, chunk.steps, row)
            entry.update(method=chunk.spec.task.objective,
                         lr=float(run.hparams["train"]["lr"]),
                         source_run=int(row["source_run"]), source_step=int(row["source_step"]),
                         step=int(chunk.steps[-1]),
                         **_json({k: one[k] for k in ("weights", "separation", "centroids",
                                                      "explained", "lipschitz", "refusal",
                                                      "accuracy", "attack")}))
            report.append(entry)
            site_names = sites(chunk.spec.model.num_layers)
            saved.append((run.run_id, np.stack([np.stack([one["pcs"][m][s] for s in site_names])
                                                for m in MODELS]),
                          np.stack([np.stack([one["explained"][m][s] for s in site_names])
                                    for m in MODELS])))
    if spec0 is None:
        raise ConfigError(f"no runs to analyse in {out}")
    report.sort(key=lambda e: e["run_id"])
    saved.sort(key=lambda t: t[0])
    num_layers = spec0.model.num_layers

    def write(path: Path):
        with open(path, "wb") as f:
            np.savez(f, run_id=np.array([s[0] for s in saved]),
                     pcs=np.stack([s[1] for s in saved]).astype(np.float32),
                     explained=np.stack([s[2] for s in saved]),
                     splits=np.array(PCA_SPLITS), sites=np.array(sites(num_layers)),
                     models=np.array(MODELS))

    results.atomic_write(out / NPZ, write)
    return {"task": cfg.task.name, "num_sequences": num, "pca_sequences": num_pca,
            "top_k": TOP_K, "window": window(spec0), "soft_tokens": SOFT_TOKENS,
            "attack_steps": ATTACK_STEPS, "layers": layers(num_layers),
            "sites": sites(num_layers), "query_splits": list(QUERY_SPLITS),
            "pca_splits": list(PCA_SPLITS), "splits": list(task.SPLITS), "runs": report}


def summary(doc: dict) -> dict:
    """Per run: ΔW's mean left alignment over the MLP matrices and the random baseline's, its
    mean entropy effective rank, the safe/unsafe separation at the last site (fine-tuned),
    the refusal on unsafe inputs before and after the soft-token attack."""
    out = {}
    for r in doc["runs"]:
        w = r["weights"].values()

        def mean(key):
            vals = [v[key] for v in w if v[key] is not None]
            return float(np.mean(vals)) if vals else None
        last = doc["sites"][-1]
        out[r["run_id"]] = {"alignment": mean("alignment_left"),
                            "alignment_random": mean("baseline_left"),
                            "delta_rank": mean("entropy_rank"),
                            "separation": r["separation"][last]["finetuned"],
                            "refusal_attacked": r["attack"]["refusal_after"]}
    return out
