"""The results directory: plain files that numpy / pandas / csv read without jaxsim.

    config.yaml    the fully resolved config (defaults filled in)
    plan.json      the expanded plan, written once when the sweep starts: the device count, every
                   shape group's merged static spec and chunks (their size and run ids), and every
                   run's seed, axis values and dynamic hyperparameters; resume, merge, analyze,
                   plot and activation sources read it instead of re-expanding the grid
    runs.csv       run_id, seed, one column per axis (dotted key), in a staged sweep each run's
                   source (source_dir, source_run, source_step), status, and where the run's
                   state sits in the checkpoints: shape_group, chunk, index_in_chunk
    metrics.npz    step [E]; per-run metrics [R, E] in runs.csv order (NaN where a run has no
                   evaluation at that step): train_loss and, per split, the testbed's metrics
                   named <metric>_<split> (each testbed's docs page lists them), plus the
                   testbed's aliases (markov_mixture: oracle_loss = oracle_loss_ood)
    checkpoints/   group_G/chunk_C/step_XXXXXXXX (orbax), the stacked state of a chunk's runs
    figures/       PNGs drawn from the files above
    .lock          the writer lock: the pid of the process training or analysing the directory
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxsim import config as cfglib
from jaxsim import grid, testbeds

CONFIG, PLAN, RUNS, METRICS, CHECKPOINTS, FIGURES, ANALYSIS, LOCK = (
    "config.yaml", "plan.json", "runs.csv", "metrics.npz", "checkpoints", "figures",
    "analysis.json", ".lock")
STEP_DIR = re.compile(r"^step_(\d{8})$")
log = logging.getLogger(__name__)
DAMAGED = ".damaged"   # suffix of a checkpoint step folder that could not be read


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, then rename over `path`: readers never see a half-written file.
    In a multi-host sweep only process 0 writes (the others hold the same content)."""
    if jax.process_index() != 0:
        return
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def is_empty(out: Path) -> bool:
    """A directory that holds nothing but (perhaps) a released writer lock."""
    return all(p.name == LOCK for p in Path(out).iterdir())


def make_output_dir(out: Path) -> bool:
    """Create `out` (and its parents) for a new sweep; True if it was created here. One line
    naming the problem when it cannot be: a path through a file, no permission, ..."""
    out = Path(out)
    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise cfglib.ConfigError(f"--out '{out}' is a file, not a directory") from None
    except NotADirectoryError:
        raise cfglib.ConfigError(f"--out '{out}' lies under a file (a path component is not a "
                                 f"directory); choose another --out") from None
    except OSError as e:
        raise cfglib.ConfigError(f"cannot create --out '{out}': {e.strerror}") from None
    check_writable(out)
    return not existed


def check_writable(out: Path) -> None:
    """One line if this process cannot write into the directory `out`."""
    probe = Path(out) / f".write_test.{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise cfglib.ConfigError(f"cannot write into '{out}' ({e.strerror}); check its "
                                 f"permissions or choose another directory") from None


@contextlib.contextmanager
def writer_lock(out: Path, what: str):
    """Hold the results directory's exclusive writer lock while `what` (sweep, resume, analyze)
    writes into it: an flock on DIR/.lock, which the OS releases when the process ends however it
    ends (so a killed sweep never leaves a stale lock). A second writer gets one line naming the
    holder's pid. Only process 0 of a multi-host sweep writes, so only it locks."""
    if jax.process_index() != 0:
        yield
        return
    path = Path(out) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise cfglib.ConfigError(f"cannot write into '{out}' ({e.strerror}); check its "
                                 f"permissions") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
        os.close(fd)
        raise cfglib.ConfigError(f"'{out}' is in use by another jaxsim process ({holder}); "
                                 f"wait for it to finish, or stop it and run this again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, jaxsim {what}".encode(), 0)
    try:
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_finished(out: Path) -> bool:
    """Every run of the directory trained to its end: metrics.npz, runs.csv and plan.json
    intact, no run pending, and each chunk's last checkpoint on disk (a chunk folder deleted
    by hand is retrained by resume)."""
    out = Path(out)
    if not (out / METRICS).is_file() or not (out / RUNS).is_file():
        return False
    try:
        read_metrics(out)
        rows = read_runs(out)
        _, groups = read_plan(out)
    except cfglib.ConfigError:   # damaged: resume rebuilds it
        return False
    ids = {int(r["run_id"]) for r in rows}
    last_saved = all(g.spec.train.steps in ChunkCheckpoints(chunk_dir(out, g.index, c.index),
                                                            []).steps()
                     for g in groups for c in g.chunks if c.runs[0].run_id in ids)
    return last_saved and all(r["status"] in ("done", "diverged") for r in rows)


def check_config(out: Path) -> None:
    """One line when `out` holds a sweep's files but has lost its config.yaml (the resolved
    config, which the other files do not hold whole: it cannot be rebuilt)."""
    out = Path(out)
    if out.is_dir() and not (out / CONFIG).is_file() and any(
            (out / name).exists() for name in (PLAN, RUNS, METRICS, CHECKPOINTS)):
        raise cfglib.ConfigError(f"'{out}' has lost its {CONFIG} (the sweep's resolved config, "
                                 f"which cannot be rebuilt from the other files): copy it back, "
                                 f"or sweep again into a new --out")


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
    return cfglib.Spec(task_cls(**doc["task"]), cfglib.ModelConfig(**doc["model"]),
                       cfglib.TrainConfig(**doc["train"]), init,
                       spec_from_dict(doc["source"]) if "source" in doc else None)


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


class _DamagedPlan(Exception):
    """plan.json cannot be read (its message: the error)."""


def _read_plan_file(out: Path, device_count: int | None, sizes: dict[int, int] | None
                    ) -> tuple[list, list]:
    try:
        doc = json.loads((out / PLAN).read_text())
        if _before_stages(doc):   # an activations plan with the task.source keys of version 1
            return _replan(out, device_count, sizes)
        runs = {d["run_id"]: grid.Run(d["run_id"], d["seed"], d["values"], d["hparams"])
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


def write_runs(out: Path, cfg: cfglib.Config, groups: list, status: dict[int, str]) -> None:
    """runs.csv from the planned groups (`jaxsim.grid.Group`) and each run's status."""
    axes = cfglib.axis_keys(cfg)
    rows = []
    sources: dict[int, list] = {}   # a source run's columns, read once per call
    for group in groups:
        for chunk in group.chunks:
            for i, run in enumerate(chunk.runs):
                rows.append([run.run_id, run.seed, *[run.values[a] for a in axes],
                             *_source_columns(cfg, run, sources), status.get(run.run_id, "pending"),
                             group.index, chunk.index, i])
    rows.sort(key=lambda r: r[0])
    header = ["run_id", "seed", *axes, *(SOURCE_COLUMNS if cfg.init.source else ()), "status",
              "shape_group", "chunk", "index_in_chunk"]

    def write(p: Path):
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    atomic_write(out / RUNS, write)


SOURCE_COLUMNS = ("source_dir", "source_run", "source_step")


def _source_columns(cfg: cfglib.Config, run, memo: dict) -> list:
    """A staged run's source: directory, run_id and the saved step it starts from."""
    if not cfg.init.source:
        return []
    source = run.hparams["init"]["run"]
    if source not in memo:
        memo[source] = [cfg.init.source, source,
                        source_step(Path(cfg.init.source), source, cfg.init.step)]
    return memo[source]


PLACED = ("run_id", "seed", "status", "shape_group", "chunk", "index_in_chunk")


def read_runs(out: Path) -> list[dict[str, str]]:
    """runs.csv's rows (dicts of strings); one line if it is damaged (empty, truncated, a column
    missing, its own or an axis of config.yaml): resume rewrites it from plan.json."""
    path = Path(out) / RUNS
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ValueError("no rows")
        axes = cfglib.axis_keys(cfglib.load(out / CONFIG)) if (out / CONFIG).is_file() else []
        for row in rows:
            for column in PLACED:
                int(row[column]) if column != "status" else row[column].strip()
            for column in axes:
                row[column].strip()
    except (KeyError, ValueError, TypeError, AttributeError, csv.Error, UnicodeDecodeError) as e:
        raise cfglib.ConfigError(f"{path} is damaged ({type(e).__name__}: {e}); `jaxsim resume "
                                 f"{out}` rewrites it from plan.json") from None
    return rows


def read_analysis(out: Path) -> dict | None:
    """analysis.json as `jaxsim analyze` wrote it (None before); one line if it is damaged."""
    path = Path(out) / ANALYSIS
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("runs", []), list):
            raise ValueError("not an analysis document")
    except (ValueError, UnicodeDecodeError) as e:
        raise cfglib.ConfigError(f"{path} is damaged ({type(e).__name__}: {e}); run `jaxsim "
                                 f"analyze {Path(out)}` again") from None
    return doc


def write_metrics(out: Path, steps: np.ndarray, arrays: dict[str, np.ndarray],
                  aliases: dict[str, str] | None = None) -> None:
    """metrics.npz: `steps` [E] and the [R, E] arrays, plus each alias -> an existing name
    (a testbed's `metric_aliases`)."""
    arrays = dict(arrays)
    for alias, name in (aliases or {}).items():
        if name in arrays:
            arrays[alias] = arrays[name]

    def write(p: Path):
        with open(p, "wb") as f:
            np.savez(f, step=steps, **arrays)

    atomic_write(out / METRICS, write)


def read_metrics(out: Path) -> dict[str, np.ndarray]:
    """metrics.npz's arrays; one line if it is damaged: resume rebuilds it from the
    checkpoints (each holds its chunk's metrics)."""
    path = Path(out) / METRICS
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if "step" not in arrays:
            raise ValueError("no 'step' array")
    except FileNotFoundError:
        raise
    except Exception as e:   # zipfile.BadZipFile, EOFError, ValueError, OSError, ...
        raise cfglib.ConfigError(f"{path} is damaged ({type(e).__name__}: {e}); `jaxsim resume "
                                 f"{out}` rebuilds it from the checkpoints") from None
    return arrays


def chunk_dir(out: Path, group_index: int, chunk_index: int) -> Path:
    return Path(out) / CHECKPOINTS / f"group_{group_index:03d}" / f"chunk_{chunk_index:03d}"


def assemble(runs: list, groups: list, per_chunk: dict[tuple[int, int], dict]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-chunk metrics [C, E_g] -> step grid [E] and [R, E] arrays in run_id order (R = the
    runs of `groups`: the whole table, or a shard's part of it)."""
    steps = sorted({s for g in groups for s in range(g.spec.train.eval_every,
                                                     g.spec.train.steps + 1,
                                                     g.spec.train.eval_every)})
    column = {s: i for i, s in enumerate(steps)}
    # the union of the groups' metric names (e.g. max_cos only on subspace data): NaN elsewhere
    names = list(dict.fromkeys(n for metrics in per_chunk.values() for n in metrics))
    row = {rid: i for i, rid in enumerate(sorted(r.run_id for g in groups for c in g.chunks
                                                 for r in c.runs))}
    arrays = {n: np.full((len(row), len(steps)), np.nan, np.float32) for n in names}
    for group in groups:
        cols = [column[s] for s in range(group.spec.train.eval_every, group.spec.train.steps + 1,
                                         group.spec.train.eval_every)]
        for chunk in group.chunks:
            metrics = per_chunk[group.index, chunk.index]
            for i, run in enumerate(chunk.runs):
                for n in metrics:
                    arrays[n][row[run.run_id], cols] = metrics[n][i]
    return np.array(steps, np.int64), arrays


def run_status(chunk_metrics: dict[str, np.ndarray], index: int) -> str:
    """'diverged' if any training or evaluation loss of the run is NaN or infinite, else 'done'."""
    finite = all(np.isfinite(a[index]).all() for n, a in chunk_metrics.items()
                 if n.startswith(("train", "eval")))
    return "done" if finite else "diverged"


class ChunkCheckpoints:
    """step_XXXXXXXX folders of one chunk: {'state': stacked state, 'metrics': {name: [C, E]}}.

    Orbax writes into a temporary folder and renames it when complete, so a folder matching
    STEP_DIR is always whole; a kill mid-write leaves only a temporary folder, removed here.
    """

    def __init__(self, directory: Path, keep_steps: list[int]):
        self.directory = Path(directory).absolute()  # orbax needs absolute paths
        self.keep = set(keep_steps)
        self.checkpointer = ocp.StandardCheckpointer()
        self._writing: int | None = None  # step of an async save not yet known to be complete

    def steps(self) -> list[int]:
        if not self.directory.exists():
            return []
        return sorted(int(m.group(1)) for p in self.directory.iterdir()
                      if (m := STEP_DIR.match(p.name)))

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}"

    def clean_partial(self) -> None:
        """Remove what a killed save left (orbax's temporary folders); set-aside damaged steps
        (`set_aside`) stay."""
        if self.directory.exists() and jax.process_index() == 0:
            for p in self.directory.iterdir():
                if not STEP_DIR.match(p.name) and not p.name.endswith(DAMAGED):
                    shutil.rmtree(p, ignore_errors=True)

    def set_aside(self, step: int) -> Path:
        """Rename a step folder that cannot be read to step_XXXXXXXX.damaged (kept, never read
        again): resume then continues from the newest intact step."""
        target = self.path(step).with_name(self.path(step).name + DAMAGED)
        if jax.process_index() == 0:
            shutil.rmtree(target, ignore_errors=True)
            os.replace(self.path(step), target)
        return target

    def save(self, step: int, state, metrics: dict[str, np.ndarray]) -> None:
        """Start an async save: the arrays are copied to host now (so `state` may be donated to
        the next step), written in the background. Older steps not kept for analysis are removed
        once this save is known complete (at the next save or `wait`)."""
        self.wait()
        self.directory.mkdir(parents=True, exist_ok=True)
        metrics = {name: np.array(values) for name, values in metrics.items()}
        self.checkpointer.save(self.path(step), {"state": state, "metrics": metrics})
        self._writing = step

    def wait(self) -> None:
        """Block until the last save is on disk, then drop the steps it supersedes."""
        if self._writing is None:
            return
        self.checkpointer.wait_until_finished()
        step, self._writing = self._writing, None
        for old in self.steps() if jax.process_index() == 0 else []:
            if old < step and old not in self.keep:
                shutil.rmtree(self.path(old), ignore_errors=True)

    def restore(self, step: int, target):
        """The checkpoint at `step` laid out like `target`; target None = whole arrays on this
        process's first device, whatever topology saved them (another device count, or a
        multi-host sweep's processes)."""
        if target is None:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            meta = self.checkpointer.metadata(self.path(step))  # StepMetadata or the tree
            meta = getattr(meta, "item_metadata", meta)
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype,
                                                                 sharding=device),
                                  getattr(meta, "tree", meta))
        return self.checkpointer.restore(self.path(step), target)


class SavedRun(NamedTuple):
    """One trained run of a saved sweep, as `load_run` reads it."""
    cfg: cfglib.Config    # the sweep's config
    spec: cfglib.Spec     # the run's own static spec
    hparams: dict         # its dynamic values (Python scalars)
    seed: int
    step: int             # the checkpoint step read
    params: dict          # numpy arrays


def load_run(out: Path, run_id: int, step: int | None = None) -> SavedRun:
    """A run of the sweep in `out` at a saved step (None or -1 = the last): its spec and
    hyperparameters from the plan, its parameters from its chunk's checkpoint."""
    out = Path(out)
    if not (out / CONFIG).is_file():
        raise cfglib.ConfigError(f"'{out}' is not a jaxsim results directory (no {CONFIG})")
    cfg = cfglib.load(out / CONFIG)
    runs, groups = read_plan(out)
    placed = {r.run_id: (r, g) for g in groups for r in g.runs}
    if run_id not in placed:
        raise cfglib.ConfigError(f"run {run_id} is not in {out}: runs 0..{len(runs) - 1}")
    run, group = placed[run_id]
    saved_step, state = restore_run(out, run_id, step)
    return SavedRun(cfg, cfglib.run_spec(group.spec, run.hparams), run.hparams, run.seed,
                    saved_step, jax.tree.map(np.asarray, state["params"]))


def _run_checkpoints(out: Path, run_id: int) -> tuple[ChunkCheckpoints, int]:
    """The checkpoints of a run's chunk and its index in them (runs.csv's placement);
    ConfigError if it is not a run of `out`."""
    rows = {int(r["run_id"]): r for r in read_runs(out)} if (Path(out) / RUNS).is_file() else {}
    if run_id not in rows:
        raise cfglib.ConfigError(f"run {run_id} is not in {Path(out) / RUNS} (runs: "
                                 f"{f'0..{max(rows)}' if rows else 'none'})")
    row = rows[run_id]
    ckpt = ChunkCheckpoints(chunk_dir(out, int(row["shape_group"]), int(row["chunk"])), [])
    return ckpt, int(row["index_in_chunk"])


def saved_steps(out: Path, run_id: int) -> list[int]:
    """The saved checkpoint steps of one run (its chunk's); ConfigError if it is not a run."""
    return _run_checkpoints(out, run_id)[0].steps()


def source_step(out: Path, run_id: int, step: int, steps: list[int] | None = None) -> int:
    """The saved step `init.step` names for a source run (-1 = its last); ConfigError if none.
    `steps`: the run's saved steps when the caller has listed them (default: listed here)."""
    steps = saved_steps(out, run_id) if steps is None else steps
    if not steps:
        raise cfglib.ConfigError(f"init.source '{out}': run {run_id} has no saved checkpoint "
                                 f"(finish it first: `jaxsim resume {out}`)")
    if step < 0:
        return steps[-1]
    if step not in steps:
        raise cfglib.ConfigError(f"init.step={step} is not saved for run {run_id} of "
                                 f"init.source '{out}'; saved steps: {steps}")
    return step


def restore_run(out: Path, run_id: int, step: int | None = None) -> tuple[int, dict]:
    """(step, state) of one run of a saved sweep: its slice of its chunk's stacked checkpoint
    at `step` (None or -1 = the last saved step)."""
    ckpt, index = _run_checkpoints(out, run_id)
    steps = ckpt.steps()
    if not steps:
        raise cfglib.ConfigError(f"no checkpoints in {ckpt.directory}; `jaxsim resume {out}` "
                                 f"trains its runs again")
    step = steps[-1] if step is None or step < 0 else step
    if step not in steps:
        raise cfglib.ConfigError(f"step {step} of run {run_id} is not saved; saved: {steps}")
    state = ckpt.restore(step, None)["state"]
    return step, jax.tree.map(lambda a: a[index], state)
