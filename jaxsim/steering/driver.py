"""`jaxsim steer DIR CONFIG`: steer every selected run of a saved gpt sweep, write the records.

Output directory (plain files):
  steer.yaml               the resolved steering config, with the source directory
  steering.csv             one row per run x method x variant x layer x direction x multiplier
  steering_vectors.npz     per shape group: run ids, CAA vectors, ITI head shifts and probe
                           accuracies
  figures/                 `jaxsim.steering.figures`
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import config as cfglib
from jaxsim import results, stages, testbeds
from jaxsim.results import studies
from jaxsim.config import ConfigError
from jaxsim.steering import CONFIG_FILE, RECORDS, VECTORS, programs, sae_source, summary
from jaxsim.steering.config import SteerConfig, to_dict

log = logging.getLogger(__name__)
METRICS = ("delta", "delta_se", "shift", "shift_se", "toward", "log_odds", "side_effect")


def _source_config(source: Path) -> cfglib.Config:
    cfg = studies.source_config(source, "steer")
    testbed = testbeds.of(cfg)
    if cfg.model.name != "gpt":
        raise ConfigError(f"jaxsim steer steers gpt models; '{source}' has model.name="
                          f"{cfg.model.name}")
    if not testbed.behaviours:
        with_any = [n for n, t in testbeds.builtin().items() if t.behaviours]
        raise ConfigError(f"task.name={testbed.name} defines no behaviours to steer; testbeds "
                          f"that do: {', '.join(with_any)}")
    return cfg


def _behaviour(testbed, scfg: SteerConfig) -> str:
    name = scfg.behaviour or next(iter(testbed.behaviours))
    if name not in testbed.behaviours:
        raise ConfigError(f"steer.behaviour={name!r} is not a behaviour of task.name="
                          f"{testbed.name}; its behaviours: {', '.join(testbed.behaviours)}")
    return name


def _selected(groups: list, scfg: SteerConfig) -> dict[int, list]:
    ids = sorted(r.run_id for g in groups for r in g.runs)
    missing = sorted(set(scfg.runs) - set(ids))
    if missing:
        raise ConfigError(f"steer.runs {missing} are not runs of the source; its runs: "
                          f"0..{ids[-1]}")
    wanted = set(scfg.runs or ids)
    return {g.index: [r for r in g.runs if r.run_id in wanted] for g in groups
            if any(r.run_id in wanted for r in g.runs)}


def _layout(spec, scfg: SteerConfig, behaviour, name: str, sae_variants: int
            ) -> programs.Layout:
    continuation = scfg.continuation or behaviour.continuation
    problem = behaviour.check(spec, continuation)
    if problem:
        raise ConfigError(f"steer.behaviour={name}: {problem}")
    layers = scfg.layers or tuple(range(spec.model.num_layers))
    if max(layers) >= spec.model.num_layers:
        raise ConfigError(f"steer.layers {list(layers)}: the source model has "
                          f"{spec.model.num_layers} blocks (layers 0..{spec.model.num_layers - 1})")
    if scfg.iti_heads > spec.model.num_heads:
        raise ConfigError(f"steer.iti_heads={scfg.iti_heads} exceeds the source model's "
                          f"model.num_heads={spec.model.num_heads}")
    methods = tuple(m for m in scfg.methods if m != "sae" or sae_variants)
    return programs.Layout(name, continuation, scfg.fit_prompts, scfg.eval_prompts, methods,
                           tuple(layers), scfg.iti_heads, scfg.random_directions,
                           sae_variants, tuple(scfg.multipliers), scfg.seed)


def _on_devices(tree, count: int):
    """Pad the leading run axis to a multiple of the local devices and shard it over them."""
    devices = jax.local_devices()
    pad = -count % len(devices)
    tree = jax.tree.map(lambda a: jnp.concatenate([jnp.asarray(a)] + [jnp.asarray(a)[-1:]] * pad),
                        tree)
    return jax.device_put(tree, jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.array(devices), ("runs",)), jax.sharding.PartitionSpec("runs")))


def _records(layout, runs, rows, axes, steps, per, sae_info) -> list[dict]:
    per = jax.tree.map(np.asarray, per)
    out = []
    scales = layout.scales()
    for r, run in enumerate(runs):
        row = rows[run.run_id]
        base = {"run_id": run.run_id, "seed": run.seed, **{k: row[k] for k in axes},
                "step": steps[r], "behaviour": layout.behaviour}
        for i, (method, variant, layer) in enumerate(layout.interventions()):
            latent = -1
            if method == "sae":
                if variant >= len(sae_info[r]):
                    continue
                variant, layer, latent = sae_info[r][variant]
            for s, scale in enumerate(scales):
                out.append({**base, "method": method, "variant": variant, "layer": layer,
                            "direction": "promote" if scale > 0 else "suppress",
                            "multiplier": float(abs(scale)), "latent": latent,
                            "norm": float(per["norm"][r, i]),
                            "resid_norm": float(per["resid_norm"][r, i]),
                            **{m: float(per[m][r, i, s]) for m in METRICS},
                            "base_log_odds": float(per["base_log_odds"][r]),
                            "clean_loss": float(per["clean_loss"][r]),
                            "num_prompts": int(per["num_prompts"][r])})
    return out


def _plan(source: Path, scfg: SteerConfig, testbed, name: str) -> list[tuple]:
    """Per shape group to steer: (group, its runs, their steps, their SAEs, the Layout), all
    checked before anything is written."""
    _, groups = results.read_plan(source)
    chosen = _selected(groups, scfg)
    saes = sae_source.index(Path(scfg.sae), source) if "sae" in scfg.methods else {}
    plan = []
    for g in groups:
        if g.index not in chosen:
            continue
        ids = [r.run_id for r in chosen[g.index]]
        steps = [results.source_step(source, i, scfg.step) for i in ids]
        per_run_saes = [sae_source.for_run(saes, i, s) for i, s in zip(ids, steps)]
        layout = _layout(g.spec, scfg, testbed.behaviours[name], name,
                         max(map(len, per_run_saes), default=0))
        plan.append((g, chosen[g.index], steps, per_run_saes, layout))
    return plan


def steer(source: Path, scfg: SteerConfig, out: Path) -> Path:
    """Steer the runs of the sweep at `source` as `scfg` says; write into `out`."""
    source = Path(source).expanduser().absolute()
    cfg = _source_config(source)
    testbed = testbeds.of(cfg)
    name = _behaviour(testbed, scfg)
    plan = _plan(source, scfg, testbed, name)
    out = Path(out)
    studies.prepare_out(out, CONFIG_FILE, "steering")
    rows = {int(r["run_id"]): r for r in results.read_runs(source)}
    axes = cfglib.axis_keys(cfg)
    records, vectors = [], {}
    with results.writer_lock(out, "steer"):
        studies.write_config(out, CONFIG_FILE, {**to_dict(scfg), "source": str(source)})
        for g, runs, steps, per_run_saes, layout in plan:
            ids = [r.run_id for r in runs]
            log.info(f"jaxsim: steering {len(ids)} runs of shape group {g.index}: "
                     f"{len(layout.interventions())} interventions x "
                     f"{len(layout.scales())} signed multipliers x {scfg.eval_prompts} prompts")
            started = time.perf_counter()
            frozen = stages.frozen_runs(str(source), ids, scfg.step)
            inputs = _on_devices((frozen["params"], frozen["hparams"], frozen["seed"]), len(ids))
            fit_program, eval_program = programs.programs(g.spec, layout)
            acts = fit_program(*inputs)
            sae_resid, sae_layer, sae_info = sae_source.vectors(
                per_run_saes, acts, layout.sae_variants, g.spec.model.d_model)
            per = eval_program(*inputs, acts, *_on_devices((sae_resid, sae_layer), len(ids)))
            per = jax.tree.map(lambda a: np.asarray(a)[:len(ids)], per)
            records += _records(layout, runs, rows, axes, steps, per, sae_info)
            log.info(f"jaxsim: shape group {g.index} steered in "
                     f"{time.perf_counter() - started:.1f} s (compile included)")
            vectors.update({f"run_ids_g{g.index}": np.array(ids),
                            f"caa_g{g.index}": per["caa"], f"iti_g{g.index}": per["iti"],
                            f"iti_accuracy_g{g.index}": per["iti_accuracy"]})
        studies.write_records(out / RECORDS, records)
        studies.write_arrays(out / VECTORS, vectors)
        import pandas as pd
        for line in summary.write(out, pd.DataFrame(records), axes):
            log.info(f"jaxsim: {line}")
    return out
