"""The tables of a results directory: runs.csv (each run's seed, axis values, status and place
in the checkpoints), metrics.npz ([runs, evaluations] arrays), analysis.json; and each run's
saved steps and state, found through its runs.csv row. A damaged file is one line naming it
and what rebuilds it."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import numpy as np

from jaxsim import config as cfglib
from jaxsim.results.checkpoints import ChunkCheckpoints, chunk_dir
from jaxsim.results.files import ANALYSIS, CONFIG, METRICS, RUNS, atomic_write

def write_runs(out: Path, cfg: cfglib.Config, groups: list, status: dict[int, str],
               finals: list[tuple[str, list[str]]] | None = None) -> None:
    """runs.csv from the planned groups (`jaxsim.grid.Group`) and each run's status; `finals`
    (after training: `jaxsim.summaries.run_columns`, cells in run_id order) are appended as
    columns after the placement ones."""
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
    if finals:
        header += [name for name, _ in finals]
        rows = [row + [cells[i] for _, cells in finals] for i, row in enumerate(rows)]

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
        try:
            axes = cfglib.axis_keys(cfglib.load(out / CONFIG)) if (out / CONFIG).is_file() else []
        except cfglib.ConfigError as e:   # not runs.csv's fault: say which file and why
            raise _Invalid(f"{out / CONFIG} does not validate under this version of jaxsim: "
                           f"{e}") from None
        for row in rows:
            for column in PLACED:
                int(row[column]) if column != "status" else row[column].strip()
            for column in axes:
                row[column].strip()
    except _Invalid as e:
        raise cfglib.ConfigError(str(e)) from None
    except (KeyError, ValueError, TypeError, AttributeError, csv.Error, UnicodeDecodeError) as e:
        raise cfglib.ConfigError(f"{path} is damaged ({type(e).__name__}: {e}); `jaxsim resume "
                                 f"{out}` rewrites it from plan.json") from None
    return rows


class _Invalid(Exception):
    """A results directory's config.yaml that the current rules refuse (not a damaged file)."""


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
