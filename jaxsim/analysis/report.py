"""`jaxsim analyze DIR`: analysis of every run at every saved checkpoint, by task.

Reads config.yaml, runs.csv, metrics.npz and the orbax checkpoints (never re-trains); one
jit(vmap) call per chunk (and split), vmapped over the chunk's runs, lax.map over its
checkpoints. Writes DIR/analysis.json (plus DIR/analysis_attention.npz for matrix completion).

markov_mixture — the four ICL algorithms:
    {"task", "algorithms": [4 names], "splits": ["id", "ood"], "context_lengths": [G],
     "num_sequences": B, "dominant_rule": "...", "mixture_rule": "...",
     "runs": [{"run_id", "seed", "axes": {key: value}, "steps": [S],
               "id": {"kl_model_to_alg": [S][G][4], "kl_alg_to_model": [S][G][4],
                      "mixture_weights": [S][G][4], "dominant": [S][G] (names),
                      "model_loss": [S][G], "oracle_loss": [S][G]},
               "ood": {...}}, ...]}

matrix_completion — plateau, diagnostics, baselines:
    {"task", "plateau_rule", "num_matrices": B,
     "runs": [{"run_id", "seed", "axes", "steps": [S],
               "plateau": {"start", "end", "length", "dropped", "plateau_loss", "final_loss",
                           "final_masked_loss", "drop_width", "copy_loss", "copy_masked_loss"},
               "diagnostics": {"mse", "observed_copy_error", "masked_error", "masked_to_mean": [S],
                               "row_score", "col_score": [S][layers][heads],
                               "probe_row_acc", "probe_col_acc": [S][layers + 1]},
               "baselines": {"copy_mse", "copy_mse_masked", "nuclear_mse", "nuclear_mse_masked",
                             "model_mse", "model_mse_masked"},
               "attention_steps": [plateau step, final step]}, ...]}
    analysis_attention.npz: run_id [R], steps [R, 2], attention [R, 2, layers, heads, P, P]
    (mean attention over the analysis matrices, at the last checkpoint inside the plateau and at
    the final one).

sim — structured identity mapping (`analysis/sim.py`, from metrics.npz and the initial weights):
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

concept_geometry — what each SAE recovers (`analysis/concepts.py`):
    {"task", "num_points", "mcc_rule",
     "runs": [{"run_id", "seed", "axes", "steps": [S], "fvu", "l0": [S],
               "mcc_coordinates", "mcc_concepts": [S], "f1_per_concept", "l0_per_concept": [S][C],
               subspaces only: "max_cos", "l0_dim_corr", "l0_dim_slope": [S],
               "intrinsic_dims": [C]}, ...]}
    activations adds (`analysis/causal.py`, final checkpoint) a top-level "causal": {"features",
    "feature_sizes", "sequences", "positions_per_sequence", "rule"} and per run "causal":
    {"step", "recon_kl", per feature name: {"count", "best_latent", "corr", "f1", "auc",
     "clamp": [V], "ordinal_corr", "ordinal_latent", "expected_fit", "points",
     "probe", "control", "patch", "base": {"kl", "shift", "success"}}};
    with task.dim = 2, analysis_fields.npz: run_id [R], winner [R, G, G] (most active latent at
    each grid point, -1 = none), l0 [R, G, G], extent [R, 4], points [R, B, 2], concepts [R, B]
    (final checkpoint).

pcfg — grammaticality of the models' own samples (`analysis/grammaticality.py`):
    {"task", "num_samples", "checker",
     "runs": [{"run_id", "seed", "axes", "grammar", "steps": [S], "grammatical", "finished",
               "legal_tokens",
               "mean_length": [S], "grammar_mean_length", "earley_agreement"}, ...]}
    analysis_samples.npz: run_id [R], grammar [R] (str), samples [R, B, L] (final checkpoint,
    temperature 1, PAD-padded to the longest context),
    grammar_lengths [R, B] (exact samples of the grammar under the same cap).
graph_walk — in-context representations of the graph (`analysis/graph_report.py`).
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import config as cfglib
from jaxsim import grid, results, tasks
from jaxsim.analysis import causal, completion, concepts, earley, grammaticality, icl, plateau
from jaxsim.analysis import sim as simlib
from jaxsim.config import ConfigError, Spec
from jaxsim.training import activations


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _analyze_chunk(spec: Spec, params_RxS, seeds_R, hparams_R, num_sequences: int, split: str,
                   ends_G):
    keys = jax.vmap(jax.random.key)(seeds_R)
    return jax.vmap(icl.analyze_run, (0, 0, None, 0, None, None, None))(
        params_RxS, keys, spec, hparams_R, ends_G, num_sequences, split)


def _group_specs(cfg: cfglib.Config, rows: list[dict]) -> tuple[dict, dict[int, grid.Run]]:
    runs = {r.run_id: r for r in grid.expand(cfg)}
    members: dict[int, list[grid.Run]] = {}
    for row in rows:
        members.setdefault(int(row["shape_group"]), []).append(runs[int(row["run_id"])])
    specs = {g: cfglib.merge_specs([cfglib.spec_of(r.config) for r in rs])
             for g, rs in members.items()}
    return specs, runs


def _finite(x):
    """JSON has no NaN/inf: map them to None."""
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x if isinstance(x, str) or math.isfinite(x) else None


class ChunkParams(NamedTuple):
    spec: Spec
    runs: list                # grid.Run per member, in runs.csv order
    rows: list                # runs.csv rows of the members
    steps: list               # saved checkpoint steps
    params_RxS: dict          # params stacked [runs, steps, ...]
    seeds_R: jax.Array
    hparams_R: dict
    extra_RxS: dict | None    # the rest of an SAE's state (aux counters and threshold,
                              # input_scale), else None


def chunks(out: Path, cfg: cfglib.Config, rows: list[dict]) -> Iterator[ChunkParams]:
    """Each checkpointed chunk's runs with their params at every saved step."""
    specs, runs = _group_specs(cfg, rows)
    members_of: dict[tuple[int, int], list[dict]] = {}
    for row in rows:
        members_of.setdefault((int(row["shape_group"]), int(row["chunk"])), []).append(row)
    for (g, c), members in sorted(members_of.items()):
        ckpt = results.ChunkCheckpoints(results.chunk_dir(out, g, c), [])
        steps = ckpt.steps()
        if not steps:
            raise ConfigError(f"no checkpoints in {ckpt.directory}; run `jaxsim resume {out}`")
        index = np.array([int(r["index_in_chunk"]) for r in members])
        states = [ckpt.restore(s, None)["state"] for s in steps]
        stack = lambda *a: jnp.stack([x[index] for x in a], axis=1)
        params_RxS = jax.tree.map(stack, *[st["params"] for st in states])
        rest = [{k: v for k, v in st.items() if k not in ("params", "opt_state", "step")}
                for st in states]
        extra_RxS = jax.tree.map(stack, *rest) if rest[0] else None
        chunk_runs = [runs[int(r["run_id"])] for r in members]
        yield ChunkParams(specs[g], chunk_runs, members, steps, params_RxS,
                          jnp.array([r.seed for r in chunk_runs], jnp.int32),
                          grid.stack_hparams(chunk_runs), extra_RxS)


def _entry(run, steps) -> dict:
    return {"run_id": run.run_id, "seed": run.seed, "axes": run.values, "steps": steps}


def _tolist(x) -> list | float:
    return _finite(np.asarray(x, np.float64).tolist())


def analyze(out: Path, num_sequences: int = 64, lengths: list[int] | None = None) -> Path:
    """Analyse a sweep directory by its task; `num_sequences` = analysis sequences (matrices)."""
    out = Path(out)
    if not (out / results.CONFIG).is_file() or not (out / results.RUNS).is_file():
        raise ConfigError(f"'{out}' is not a sweep directory (needs {results.CONFIG} and "
                          f"{results.RUNS})")
    cfg = cfglib.load(out / results.CONFIG)
    rows = results.read_runs(out)
    if cfg.task.name not in ("markov_mixture", "graph_walk") and lengths:
        raise ConfigError("--context-lengths applies to task.name=markov_mixture or graph_walk "
                          "only")
    if cfg.task.name == "graph_walk":
        from jaxsim.analysis import graph_report
        doc = graph_report.analyze_graph(out, cfg, rows, num_sequences, lengths)
    elif cfg.task.name == "sim":
        _, runs = _group_specs(cfg, rows)
        doc = simlib.report(cfg, rows, results.read_metrics(out), runs)
    elif cfg.task.name == "matrix_completion":
        doc = _analyze_completion(out, cfg, rows, num_sequences)
    elif cfg.task.name in ("concept_geometry", "activations"):
        doc = _analyze_concepts(out, cfg, rows, num_sequences)
    elif cfg.task.name == "pcfg":
        doc = _analyze_pcfg(out, cfg, rows, num_sequences)
    else:
        doc = _analyze_icl(out, cfg, rows, num_sequences, lengths)
    path = out / results.ANALYSIS
    results.atomic_write(path, lambda p: p.write_text(json.dumps(doc)))
    return path


def _analyze_icl(out: Path, cfg, rows, num_sequences: int, lengths: list[int] | None) -> dict:
    specs, _ = _group_specs(cfg, rows)
    longest = min(s.task.context_length for s in specs.values()) - 1
    lengths = lengths or icl.context_lengths(longest + 1)
    bad = [v for v in lengths if not 1 <= v <= longest]
    if bad:
        raise ConfigError(f"--context-lengths {bad} out of range: allowed 1..{longest} "
                          f"(the trained context minus one)")
    ends = jnp.asarray(np.array(lengths) - 1, jnp.int32)
    splits = list(tasks.get(cfg.task.name).SPLITS)
    report = []
    for chunk in chunks(out, cfg, rows):
        per_split = {split: jax.device_get(_analyze_chunk(
            chunk.spec, chunk.params_RxS, chunk.seeds_R, chunk.hparams_R, num_sequences, split,
            ends)) for split in splits}
        for i, run in enumerate(chunk.runs):
            entry = _entry(run, chunk.steps)
            for split, m in per_split.items():
                block = {k: _tolist(v[i]) for k, v in m.items()}
                block["dominant"] = [[icl.NAMES[a] for a in row]
                                     for row in icl.dominant(np.asarray(m["kl_alg_to_model"][i]))]
                entry[split] = block
            report.append(entry)
    report.sort(key=lambda e: e["run_id"])
    return {"task": cfg.task.name, "algorithms": list(icl.NAMES), "splits": splits,
            "context_lengths": lengths, "num_sequences": num_sequences,
            "dominant_rule": "argmin over algorithms of KL(algorithm || model), mean over sequences",
            "mixture_rule": "simplex weights minimising KL(model || sum_a w_a algorithm_a)",
            "runs": report}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _completion_chunk(spec: Spec, params_RxS, seeds_R, hparams_R, num_matrices: int):
    keys = jax.vmap(jax.random.key)(seeds_R)
    return jax.vmap(completion.analyze_run, (0, 0, None, 0, None))(
        params_RxS, keys, spec, hparams_R, num_matrices)


def _nuclear(spec: Spec, seed: int, hparams: dict, num_matrices: int) -> dict:
    batch = completion.analysis_batch(jax.random.key(seed), spec, hparams, num_matrices)
    return {k: float(v) for k, v in
            completion.nuclear_norm_baseline(batch.values_BxP, batch.masked_BxP).items()}


def _analyze_completion(out: Path, cfg, rows, num_matrices: int) -> dict:
    metrics = results.read_metrics(out)
    position = {int(r["run_id"]): i for i, r in enumerate(rows)}
    report, attention = [], []
    for chunk in chunks(out, cfg, rows):
        diag = jax.device_get(_completion_chunk(chunk.spec, chunk.params_RxS, chunk.seeds_R,
                                                chunk.hparams_R, num_matrices))
        for i, run in enumerate(chunk.runs):
            r = position[run.run_id]
            found = plateau.detect(*(metrics[k][r] if k != "step" else metrics[k] for k in (
                "step", "eval_mse_id", "eval_mse_masked_id", "copy_mse_id", "copy_mse_masked_id")))
            hp = jax.tree.map(lambda a: a[i], chunk.hparams_R)
            nuclear = _nuclear(chunk.spec, run.seed, hp, num_matrices)
            steps = np.array(chunk.steps)
            inside = steps[steps < found["end"]] if found["end"] is not None else steps
            picks = [int(np.flatnonzero(steps == (inside[-1] if inside.size else steps[0]))[0]),
                     len(steps) - 1]
            attention.append(diag["attention"][i][picks])
            entry = _entry(run, chunk.steps)
            entry["plateau"] = found
            entry["diagnostics"] = {k: _tolist(v[i]) for k, v in diag.items() if k != "attention"}
            entry["baselines"] = {"copy_mse": found["copy_loss"],
                                  "copy_mse_masked": found["copy_masked_loss"],
                                  "nuclear_mse": nuclear["mse"],
                                  "nuclear_mse_masked": nuclear["mse_masked"],
                                  "model_mse": float(diag["mse"][i][-1]),
                                  "model_mse_masked": float(diag["masked_error"][i][-1])}
            entry["attention_steps"] = [int(steps[p]) for p in picks]
            report.append(entry)
    order = np.argsort([e["run_id"] for e in report])
    report = [report[i] for i in order]
    def write(path: Path):
        with open(path, "wb") as f:
            np.savez(f, run_id=np.array([e["run_id"] for e in report]),
                     steps=np.array([e["attention_steps"] for e in report]),
                     attention=np.stack([attention[i] for i in order]))

    results.atomic_write(out / results.ATTENTION, write)
    return {"task": cfg.task.name, "plateau_rule": plateau.RULE, "num_matrices": num_matrices,
            "diagnostics_matrices": "fixed per run (analysis stream of its key)", "runs": report}


@functools.partial(jax.jit, static_argnums=(0, 5))
def _concepts_chunk(spec: Spec, params_RxS, extra_RxS, seeds_R, hparams_R, num_points: int):
    keys = jax.vmap(jax.random.key)(seeds_R)
    return jax.vmap(concepts.analyze_run, (0, 0, 0, None, 0, None))(
        params_RxS, extra_RxS, keys, spec, hparams_R, num_points)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _fields_chunk(spec: Spec, params_R, extra_R, seeds_R, hparams_R, num_points: int):
    keys = jax.vmap(jax.random.key)(seeds_R)
    return jax.vmap(concepts.receptive_fields, (0, 0, 0, None, 0, None))(
        params_R, extra_R, keys, spec, hparams_R, num_points)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _causal_chunk(spec: Spec, params_R, extra_R, seeds_R, hparams_R, num_seqs: int):
    keys = jax.vmap(jax.random.key)(seeds_R)
    return jax.vmap(causal.analyze_run, (0, 0, 0, None, 0, None))(
        params_R, extra_R, keys, spec, hparams_R, num_seqs)


def _analyze_concepts(out: Path, cfg, rows, num_points: int) -> dict:
    report, fields, probes, spec = [], [], {}, None
    for chunk in chunks(out, cfg, rows):
        spec = chunk.spec
        m = jax.device_get(_concepts_chunk(chunk.spec, chunk.params_RxS, chunk.extra_RxS,
                                           chunk.seeds_R, chunk.hparams_R, num_points))
        last = lambda t: jax.tree.map(lambda a: a[:, -1], t)
        if cfg.task.name == "activations":
            c = jax.device_get(_causal_chunk(
                chunk.spec, last(chunk.params_RxS), last(chunk.extra_RxS), chunk.seeds_R,
                chunk.hparams_R, causal.num_sequences(chunk.spec, num_points)))
            probes.update({run.run_id: dict(causal.summarise(jax.tree.map(lambda a: a[i], c)),
                                            step=chunk.steps[-1])
                           for i, run in enumerate(chunk.runs)})
        if chunk.spec.task.dim == 2:
            f = jax.device_get(_fields_chunk(chunk.spec, last(chunk.params_RxS),
                                             last(chunk.extra_RxS), chunk.seeds_R,
                                             chunk.hparams_R, num_points))
            fields += [(run.run_id, jax.tree.map(lambda a: a[i], f))
                       for i, run in enumerate(chunk.runs)]
        for i, run in enumerate(chunk.runs):
            entry = _entry(run, chunk.steps)
            entry.update(concepts.summarise(jax.tree.map(lambda a: a[i], m)))
            if run.run_id in probes:
                entry["causal"] = probes[run.run_id]
            report.append({k: _finite(v) if isinstance(v, list) else v for k, v in entry.items()})
    report.sort(key=lambda e: e["run_id"])
    if fields:
        fields.sort(key=lambda t: t[0])

        def write(path: Path):
            with open(path, "wb") as fh:
                np.savez(fh, run_id=np.array([r for r, _ in fields]),
                         **{k: np.stack([f[k] for _, f in fields]) for k in fields[0][1]})

        results.atomic_write(out / results.FIELDS, write)
    extra = {}
    if probes:
        extra["causal"] = {"features": activations.feature_names(spec),
                           "feature_sizes": activations.feature_sizes(spec),
                           "sequences": causal.num_sequences(spec, num_points),
                           "positions_per_sequence": causal.POSITIONS, "rule": causal.RULE}
    return {"task": cfg.task.name, "num_points": num_points, **extra,
            "mcc_rule": "mean |Pearson corr| of latents with ground-truth variables after a "
                        "Hungarian one-to-one matching (coordinates: concept-c coordinate m, 0 "
                        "off the concept; concepts: membership indicators)",
            "runs": report}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _pcfg_chunk(spec: Spec, params_RxS, seeds_R, hparams_R, num_samples: int):
    keys = jax.vmap(jax.random.key)(seeds_R)
    return jax.vmap(grammaticality.analyze_run, (0, 0, None, 0, None))(
        params_RxS, keys, spec, hparams_R, num_samples)


def _analyze_pcfg(out: Path, cfg, rows, num_samples: int) -> dict:
    report, samples = [], []
    for chunk in chunks(out, cfg, rows):
        m = jax.device_get(_pcfg_chunk(chunk.spec, chunk.params_RxS, chunk.seeds_R,
                                       chunk.hparams_R, num_samples))
        for i, run in enumerate(chunk.runs):
            entry = _entry(run, chunk.steps)
            entry.update({k: _tolist(m[k][i]) for k in grammaticality.METRICS})
            entry["grammar_mean_length"] = float(m["grammar_mean_length"][i])
            final, grammar = m["samples"][i], chunk.spec.task.grammar
            entry["grammar"] = grammar
            host = np.array([earley.is_grammatical(grammar, s) for s in final])
            entry["earley_agreement"] = float(np.mean(host == m["samples_grammatical"][i]))
            report.append(entry)
            samples.append((run.run_id, grammar, final, m["grammar_lengths"][i]))
    report.sort(key=lambda e: e["run_id"])
    samples.sort(key=lambda t: t[0])
    width = max(s.shape[1] for _, _, s, _ in samples)
    pad = lambda s: np.pad(s, ((0, 0), (0, width - s.shape[1])))    # PAD = 0

    def write(path: Path):
        with open(path, "wb") as fh:
            np.savez(fh, run_id=np.array([t[0] for t in samples]),
                     grammar=np.array([t[1] for t in samples]),
                     samples=np.stack([pad(t[2]) for t in samples]),
                     grammar_lengths=np.stack([t[3] for t in samples]))

    results.atomic_write(out / results.SAMPLES, write)
    return {"task": cfg.task.name, "num_samples": num_samples,
            "checker": "exact jax recogniser per grammar; earley_agreement = share of the final "
                       "checkpoint's samples on which the plain-Python Earley parser agrees",
            "runs": report}
