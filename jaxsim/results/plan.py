"""plan.json: the expanded plan of a sweep, written once when it starts (the device count, every
shape group's merged spec and chunks, every run's seed, axis values and hyperparameters), and
config.yaml; read back by resume, merge, analyze, plot and staged sweeps."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jax

from jaxsim import config as cfglib
from jaxsim import grid, testbeds
from jaxsim.results.files import CONFIG, PLAN, RUNS, atomic_write
from jaxsim.results.tables import read_runs

log = logging.getLogger(__name__)


def write_config(out: Path, cfg: cfglib.Config) -> None:
    atomic_write(out / CONFIG, lambda p: p.write_text(cfglib.dump(cfg)))


def write_plan(out: Path, groups: list, device_count: int) -> None:
    """plan.json: the whole plan of a sweep (`grid.Group`s with their chunks and runs)."""
    runs = sorted((r for g in groups for r in g.runs), key=lambda r: r.run_id)
    doc = {"version": 2, "device_count": device_count, "num_runs": len(runs),
           "groups": [{"index": g.index, "spec": spec_to_dict(g.spec),
                       "chunks": [{"index": c.index, "size": c.size,
                                   "run_ids": [r.run_id for r in c.runs]} for c in g.chunks]}
                      for g in groups],
           "runs": [{"run_id": r.run_id, "seed": r.seed, "values": r.values,
                     "hparams": r.hparams} for r in runs]}
    atomic_write(out / PLAN, lambda p: p.write_text(json.dumps(doc, indent=1)))


def spec_to_dict(spec: cfglib.Spec) -> dict:
    doc = {s: dataclasses.asdict(getattr(spec, s)) for s in cfglib.SWEEPABLE}
    if spec.source is not None:
        doc["source"] = spec_to_dict(spec.source)
    return doc


def spec_from_dict(doc: dict) -> cfglib.Spec:
    task_cls = testbeds.get(doc["task"]["name"]).config
    init = cfglib.InitConfig(**doc["init"]) if "init" in doc else cfglib.InitConfig(run=None)
    return cfglib.Spec(task_cls(**_tuples(doc["task"])),
                       cfglib.ModelConfig(**_tuples(doc["model"])),
                       cfglib.TrainConfig(**_tuples(doc["train"])), init,
                       spec_from_dict(doc["source"]) if "source" in doc else None)


def _tuples(section: dict) -> dict:
    """JSON lists back to the tuples the spec holds (e.g. model.channels): a Spec is hashed."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


def read_plan(out: Path, device_count: int | None = None,
              sizes: dict[int, int] | None = None, repair: bool = False) -> tuple[list, list]:
    """(runs, groups) of a sweep directory as planned when it started: from plan.json, or, for a
    directory written before plan.json existed, re-planned from config.yaml with each group's
    chunk size from `sizes` (default: as runs.csv records it). `device_count` (default: the
    plan's, or this process's) must split every planned chunk evenly (one line naming the
    count to use otherwise). A damaged plan.json is one line, or with `repair` (resume)
    re-planned the same way and written again."""
    out = Path(out)
    if not (out / PLAN).is_file():
        return _replan(out, device_count, sizes)
    try:
        return _read_plan_file(out, device_count, sizes)
    except _DamagedPlan as e:
        if not repair:
            raise cfglib.ConfigError(f"{out / PLAN} is damaged ({e}); `jaxsim resume {out}` "
                                     f"rebuilds it from {CONFIG} and {RUNS}") from None
    runs, groups = _replan(out, device_count, sizes)
    write_plan(out, groups, device_count or jax.device_count())
    log.warning(f"jaxsim: {out / PLAN} was damaged; rebuilt from {CONFIG} and {RUNS}")
    return runs, groups


def _with_new_keys(hparams: dict) -> dict:
    """A run's hparams with the train keys added since its plan was written (train.schedule and
    its knobs) at their defaults, which train as the plan's sweep did (a constant schedule)."""
    if "train" not in hparams:
        return hparams
    defaults = cfglib.hparams_of(cfglib.Config())["train"]
    return {**hparams, "train": {**defaults, **hparams["train"]}}


class _DamagedPlan(Exception):
    """plan.json cannot be read (its message: the error)."""


def _read_plan_file(out: Path, device_count: int | None, sizes: dict[int, int] | None
                    ) -> tuple[list, list]:
    try:
        doc = json.loads((out / PLAN).read_text())
        if _before_stages(doc):   # an activations plan with the task.source keys of version 1
            return _replan(out, device_count, sizes)
        runs = {d["run_id"]: grid.Run(d["run_id"], d["seed"], d["values"],
                                      _with_new_keys(d["hparams"]))
                for d in doc["runs"]}
        devices = device_count or doc["device_count"]
        _check_split(out, doc, devices)
        groups = []
        for g in doc["groups"]:
            chunks = [grid.Chunk(c["index"], [runs[i] for i in c["run_ids"]], c["size"])
                      for c in g["chunks"]]
            groups.append(grid.Group(g["index"], spec_from_dict(g["spec"]),
                                     [r for c in chunks for r in c.runs], chunks))
    except cfglib.ConfigError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise _DamagedPlan(f"{type(e).__name__}: {e}") from None
    return sorted(runs.values(), key=lambda r: r.run_id), groups


def _check_split(out: Path, doc: dict, devices: int) -> None:
    """A chunk's checkpoints hold its runs padded to a multiple of the planned device count;
    re-padding them for another count that does not divide that size would not match them, so
    say which count to use instead."""
    uneven = sorted({c["size"] for g in doc["groups"] for c in g["chunks"] if c["size"] % devices})
    if uneven:
        planned = doc["device_count"]
        raise cfglib.ConfigError(f"'{out}' was planned for {planned} device(s): its checkpoints "
                                 f"hold chunks of {', '.join(map(str, uneven))} runs, which "
                                 f"{devices} device(s) cannot split evenly; resume it with "
                                 f"{planned} device(s) (on a CPU host: "
                                 f"JAXSIM_CPU_DEVICES={planned})")


def _before_stages(doc: dict) -> bool:
    task = doc["groups"][0]["spec"]["task"] if doc.get("groups") else {}
    names = {f.name for f in dataclasses.fields(testbeds.get(task["name"]).config)} if task else set()
    return doc.get("version", 1) < 2 and any(k in task and k not in names
                                             for k in cfglib.LEGACY_INIT_KEYS)


def _replan(out: Path, device_count: int | None, sizes: dict[int, int] | None
            ) -> tuple[list, list]:
    cfg = cfglib.load(out / CONFIG)
    runs = grid.expand(cfg)
    if sizes is None and (out / RUNS).is_file():
        sizes = grid.recorded_sizes(read_runs(out))
    return runs, grid.plan(cfg, runs, device_count or jax.device_count(), sizes)
