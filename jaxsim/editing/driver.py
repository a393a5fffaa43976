"""`jaxsim edit DIR CONFIG`: edit every selected run of a saved knowledge_graph gpt sweep.

Output directory (plain files):
  edit.yaml          the resolved editing config, with the source directory
  edits.csv          one row per run x method x distance x edit
  edits_summary.csv  means per method x distance (`summary.py`)
  edits.npz          per run r: representations_r [3, N, D] (before; after ROME's edit 0 at the
                     smallest and at the largest distance; edit.repr_site=query: D = C x the
                     model width, the cycles' query representations side by side), order_r
                     [C, N] (the cycles), repr_site,
                     pca_edit_r [subject, relation, new object small d, new object large d,
                     the relation's cycle] of that edit
  figures/           `jaxsim.editing.figures`
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import numpy as np

from jaxsim import config as cfglib
from jaxsim import results, stages
from jaxsim.results import studies
from jaxsim.config import ConfigError
from jaxsim.editing import ARRAYS, CONFIG_FILE, RECORDS, programs, summary
from jaxsim.editing.config import EditConfig, to_dict

log = logging.getLogger(__name__)
TESTBED = "knowledge_graph"


def _source_config(source: Path) -> cfglib.Config:
    cfg = studies.source_config(source, "edit")
    if cfg.task.name != TESTBED:
        raise ConfigError(f"jaxsim edit edits facts of the {TESTBED} testbed; '{source}' has "
                          f"task.name={cfg.task.name}")
    if cfg.model.name != "gpt":
        raise ConfigError(f"jaxsim edit edits gpt models; '{source}' has model.name="
                          f"{cfg.model.name}")
    return cfg


def _layout(spec, ecfg: EditConfig) -> programs.Layout:
    layers = spec.model.num_layers
    if layers < 2:
        raise ConfigError("jaxsim edit needs a source model with at least 2 blocks (the edited "
                          "MLP must sit below the last block)")
    top = layers - 1 if ecfg.fact_token == "subject_last" else layers
    why = " with edit.fact_token=subject_last" if top < layers else ""
    if ecfg.layer >= top:
        raise ConfigError(f"edit.layer={ecfg.layer}: must be 0..{top - 1}{why} (the source "
                          f"model has {layers} blocks)")
    if ecfg.memit_layers and max(ecfg.memit_layers) >= top:
        raise ConfigError(f"edit.memit_layers {list(ecfg.memit_layers)}: must be 0..{top - 1}"
                          f"{why} (the source model has {layers} blocks)")
    if ecfg.repr_layer >= layers:
        raise ConfigError(f"edit.repr_layer={ecfg.repr_layer}: the source model has {layers} "
                          f"blocks (0..{layers - 1}, or -1 for the last)")
    n = spec.task.num_entities
    if ecfg.kind == "corrective" and spec.task.logical_frac == 0 and (
            spec.task.compositional_frac == 0):
        raise ConfigError("edit.kind=corrective edits held-out facts; the source has none "
                          "(task.logical_frac and task.compositional_frac are 0)")
    if max(ecfg.distances) >= n:
        raise ConfigError(f"edit.distances {list(ecfg.distances)}: must be below the number of "
                          f"entities on a cycle, task.num_entities={n}")
    distances = (0,) if ecfg.kind == "corrective" else ecfg.distances
    return programs.Layout(
        ecfg.kind, ecfg.methods, ecfg.fact_token, ecfg.layer, ecfg.memit_layers, distances,
        ecfg.num_edits,
        ecfg.batch_size, ecfg.contexts, ecfg.paraphrases, ecfg.value_steps,
        (ecfg.value_lr, ecfg.kl_factor, ecfg.value_weight_decay), ecfg.rome_clamp,
        ecfg.memit_clamp, ecfg.memit_cov_weight, ecfg.alphaedit_threshold, ecfg.alphaedit_l2,
        ecfg.finetune_steps, ecfg.finetune_lr, ecfg.finetune_scope, ecfg.cov_sequences,
        ecfg.eval_facts, ecfg.repr_layer, ecfg.repr_site, ecfg.repr_contexts, ecfg.chunk,
        ecfg.seed)


def _plan(source: Path, ecfg: EditConfig) -> list[tuple]:
    """Per shape group to edit: (group, its runs, their steps, the Layout), checked first."""
    _, groups = results.read_plan(source)
    ids = sorted(r.run_id for g in groups for r in g.runs)
    missing = sorted(set(ecfg.runs) - set(ids))
    if missing:
        raise ConfigError(f"edit.runs {missing} are not runs of the source; its runs: "
                          f"0..{ids[-1]}")
    wanted = set(ecfg.runs or ids)
    plan = []
    for g in groups:
        runs = [r for r in g.runs if r.run_id in wanted]
        if runs:
            steps = [results.source_step(source, r.run_id, ecfg.step) for r in runs]
            plan.append((g, runs, steps, _layout(g.spec, ecfg)))
    return plan


def _records(layout, runs, rows, axes, steps, per) -> list[dict]:
    out = []
    for r, run in enumerate(runs):
        row = rows[run.run_id]
        base = {"run_id": run.run_id, "seed": run.seed, **{k: row[k] for k in axes},
                "step": steps[r]}
        ed = per["edited"]
        for method in layout.methods:
            m = per[method]
            for d, distance in enumerate(layout.distances):
                for e in range(layout.num_edits):
                    out.append({**base, "method": method, "distance": distance, "edit": e,
                                "subject": int(ed["subject"][r, e]),
                                "relation": int(ed["relation"][r, e]),
                                "old_object": int(ed["old"][r, e]),
                                "fact_kind": int(ed["kind"][r, e]),
                                "wrong_before": int(ed["wrong_before"][r, e]),
                                "new_object": int(ed["new"][r, d, e]),
                                **{k: float(v[r, d, e]) for k, v in m.items()}})
    return out


def edit(source: Path, ecfg: EditConfig, out: Path) -> Path:
    """Edit the runs of the sweep at `source` as `ecfg` says; write into `out`."""
    source = Path(source).expanduser().absolute()
    cfg = _source_config(source)
    plan = _plan(source, ecfg)
    out = Path(out)
    studies.prepare_out(out, CONFIG_FILE, "editing")
    rows = {int(r["run_id"]): r for r in results.read_runs(source)}
    axes = cfglib.axis_keys(cfg)
    records, arrays = [], {}
    with results.writer_lock(out, "edit"):
        studies.write_config(out, CONFIG_FILE, {**to_dict(ecfg), "source": str(source)})
        for g, runs, steps, layout in plan:
            ids = [r.run_id for r in runs]
            log.info(f"jaxsim: editing {len(ids)} runs of shape group {g.index}: "
                     f"{len(layout.methods)} methods x {len(layout.distances)} distances x "
                     f"{layout.num_edits} edits")
            started = time.perf_counter()
            frozen = stages.frozen_runs(str(source), ids, ecfg.step)
            per = programs.program(g.spec, layout)(frozen["params"], frozen["hparams"],
                                                   frozen["seed"])
            per = jax.tree.map(np.asarray, per)
            log.info(f"jaxsim: shape group {g.index} edited in "
                     f"{time.perf_counter() - started:.1f} s (compile included)")
            records += _records(layout, runs, rows, axes, steps, per)
            for r, run_id in enumerate(ids):
                arrays[f"representations_{run_id}"] = per["pca"][r]
                arrays[f"order_{run_id}"] = per["order"][r]
                ed = per["edited"]
                arrays[f"pca_edit_{run_id}"] = np.array(
                    [ed["subject"][r, 0], ed["relation"][r, 0], ed["new"][r, 0, 0],
                     ed["new"][r, -1, 0], ed["cycle"][r, 0]])
            arrays["distances"] = np.array(layout.distances)
            arrays["repr_site"] = np.array(layout.repr_site)
        studies.write_records(out / RECORDS, records)
        studies.write_arrays(out / ARRAYS, arrays)
        import pandas as pd
        for line in summary.write(out, pd.DataFrame(records)):
            log.info(f"jaxsim: {line}")
    return out
