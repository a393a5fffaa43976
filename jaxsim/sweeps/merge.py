"""`jaxsim merge SHARD_DIR... --out DIR`: shards -> one results directory, equal to the
single-process sweep's: same config.yaml, runs.csv (same rows, order, chunk numbers), metrics.npz
(same arrays) and checkpoints/group_G/chunk_C layout.

Everything is checked before anything is written: the shards come from the same resolved config
and plan, their indices are 0..N-1 once each, their runs are disjoint and cover the whole table,
and each is complete (metrics.npz written, no pending run, every chunk's final checkpoint saved).
The merged directory is built in a temporary sibling and renamed into place; the shard
directories are only read (checkpoint files are hard-linked, or copied across filesystems or
with `copy=True`).
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np

from jaxsim import config, results, summaries, testbeds
from jaxsim.config import ConfigError
from jaxsim.sweeps import shards


def expand_dirs(dirs: list[Path]) -> list[Path]:
    """Shard directories; a folder that is not a shard but holds shard_* folders (the
    `<out>_shards` folder of `--slurm`) stands for them."""
    found = []
    for d in map(Path, dirs):
        if not (d / shards.MANIFEST).is_file() and d.is_dir():
            inner = sorted(p for p in d.iterdir() if (p / shards.MANIFEST).is_file())
            found.extend(inner or [d])
        else:
            found.append(d)
    return found


def _first_difference(a: str, b: str) -> str:
    for la, lb in zip(a.splitlines(), b.splitlines()):
        if la != lb:
            return f"{la.strip()!r} vs {lb.strip()!r}"
    return "different lengths"


def _check(dirs: list[Path]) -> list[dict]:
    """The shards' manifests (ordered by shard index), or one ConfigError naming the problem."""
    if not dirs:
        raise ConfigError("merge needs at least one shard directory")
    docs = [shards.read_manifest(d) for d in dirs]
    for d in dirs:
        if not (d / results.CONFIG).is_file():
            raise ConfigError(f"shard '{d}' has no {results.CONFIG}")
    ref_dir, ref = dirs[0], docs[0]
    ref_config = (ref_dir / results.CONFIG).read_text()
    by_index: dict[int, Path] = {}
    for d, doc in zip(dirs, docs):
        text = (d / results.CONFIG).read_text()
        if text != ref_config:
            raise ConfigError(f"shard '{d}' comes from another config than '{ref_dir}' "
                              f"({results.CONFIG}: {_first_difference(text, ref_config)})")
        for key in ("count", "num_runs", "device_count", "plan_digest"):
            if doc[key] != ref[key]:
                raise ConfigError(f"shard '{d}' has {key}={doc[key]!r} but '{ref_dir}' has "
                                  f"{ref[key]!r}: they belong to different sweeps or plans")
        if doc["shard"] in by_index:
            raise ConfigError(f"shard {doc['shard']}/{doc['count']} is given twice: "
                              f"'{by_index[doc['shard']]}' and '{d}'")
        by_index[doc["shard"]] = d
        _check_complete(d, doc)
    missing = sorted(set(range(ref["count"])) - set(by_index))
    if missing:
        names = ", ".join(f"{i}/{ref['count']}" for i in missing)
        raise ConfigError(f"shard(s) {names} missing (given: {sorted(by_index)})")
    owner: dict[int, Path] = {}
    for d, doc in zip(dirs, docs):
        for entry in doc["chunks"]:
            for rid in entry["run_ids"]:
                if rid in owner:
                    raise ConfigError(f"run {rid} is in both '{owner[rid]}' and '{d}'")
                owner[rid] = d
    if sorted(owner) != list(range(ref["num_runs"])):
        lost = sorted(set(range(ref["num_runs"])) - set(owner))
        raise ConfigError(f"the shards hold {len(owner)} of {ref['num_runs']} runs "
                          f"(missing run_ids {lost[:10]}{'...' if len(lost) > 10 else ''})")
    order = sorted(range(len(dirs)), key=lambda i: docs[i]["shard"])
    return [dict(docs[i], dir=dirs[i]) for i in order]


def _check_complete(d: Path, doc: dict) -> None:
    hint = f"finish it with `jaxsim resume {d}`"
    if not (d / results.METRICS).is_file() or not (d / results.RUNS).is_file():
        raise ConfigError(f"shard '{d}' is not finished (no {results.METRICS}); {hint}")
    rows = results.read_runs(d)
    expected = sorted(r for e in doc["chunks"] for r in e["run_ids"])
    if sorted(int(r["run_id"]) for r in rows) != expected:
        raise ConfigError(f"shard '{d}': {results.RUNS} does not list the runs of its "
                          f"{shards.MANIFEST}")
    pending = [int(r["run_id"]) for r in rows if r["status"] not in ("done", "diverged")]
    if pending:
        raise ConfigError(f"shard '{d}' has unfinished runs {pending[:10]}; {hint}")
    for e in doc["chunks"]:
        ckpt = results.ChunkCheckpoints(results.chunk_dir(d, e["shape_group"], e["chunk"]), [])
        if e["steps"] not in ckpt.steps():
            raise ConfigError(f"shard '{d}' lacks the final checkpoint (step {e['steps']}) "
                              f"of {ckpt.directory}; {hint}")


def _merged_runs(shard_docs: list[dict]) -> tuple[list[str], list[list[str]]]:
    header, rows = None, []
    for doc in shard_docs:
        with open(doc["dir"] / results.RUNS, newline="") as f:
            reader = csv.reader(f)
            head = next(reader)
            if header is not None and head != header:
                raise ConfigError(f"shard '{doc['dir']}': {results.RUNS} columns differ")
            header = head
            rows.extend(reader)
    rows.sort(key=lambda r: int(r[0]))
    return header, rows


def _merged_metrics(shard_docs: list[dict], num_runs: int, aliases: dict):
    """Each shard's [R_s, E_s] rows placed on the union step grid; names in first-seen order
    (shards in index order follow plan order, so this is the single-process order)."""
    parts = [results.read_metrics(doc["dir"]) for doc in shard_docs]
    steps = np.array(sorted({int(s) for p in parts for s in p["step"]}), np.int64)
    column = {int(s): i for i, s in enumerate(steps)}
    names = list(dict.fromkeys(n for p in parts for n in p if n != "step" and n not in aliases))
    arrays = {n: np.full((num_runs, len(steps)), np.nan, np.float32) for n in names}
    for doc, part in zip(shard_docs, parts):
        rows = np.array(sorted(r for e in doc["chunks"] for r in e["run_ids"]))
        cols = np.array([column[int(s)] for s in part["step"]])
        for n in part:
            if n in arrays:
                arrays[n][np.ix_(rows, cols)] = part[n]
    return steps, arrays


def _place_checkpoints(shard_docs: list[dict], into: Path, copy: bool) -> None:
    def link_or_copy(src, dst):
        if not copy:
            try:
                return os.link(src, dst)
            except OSError:
                pass
        return shutil.copy2(src, dst)

    for doc in shard_docs:
        for e in doc["chunks"]:
            src = results.chunk_dir(doc["dir"], e["shape_group"], e["chunk"])
            dst = results.chunk_dir(into, e["shape_group"], e["chunk"])
            dst.mkdir(parents=True)
            for step_dir in sorted(src.iterdir()):
                if results.STEP_DIR.match(step_dir.name):
                    shutil.copytree(step_dir, dst / step_dir.name, copy_function=link_or_copy)


def merge(dirs: list[Path], out: Path, copy: bool = False) -> Path:
    """Combine finished shard directories into the results directory `out` (new or empty)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output directory '{out}' is not empty; choose another --out")
    shard_docs = _check(expand_dirs(dirs))
    num_runs = shard_docs[0]["num_runs"]
    header, rows = _merged_runs(shard_docs)
    aliases = testbeds.of(config.load(shard_docs[0]["dir"] / results.CONFIG)).metric_aliases
    steps, arrays = _merged_metrics(shard_docs, num_runs, aliases)
    tmp = out.parent / f".{out.name}.merging-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shutil.copyfile(shard_docs[0]["dir"] / results.CONFIG, tmp / results.CONFIG)
        if (shard_docs[0]["dir"] / results.PLAN).is_file():   # the whole plan, in every shard
            shutil.copyfile(shard_docs[0]["dir"] / results.PLAN, tmp / results.PLAN)
        with open(tmp / results.RUNS, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
        results.write_metrics(tmp, steps, arrays, aliases)
        summaries.write(tmp)     # summary.csv of the whole sweep (each shard's is its own)
        _place_checkpoints(shard_docs, tmp, copy)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
