"""Shards: a deterministic 1/N slice of a sweep, trained into its own results directory.

How the runs are split. Every shard computes the full single-process plan (`grid.plan`: shape
groups, each cut into equal chunks) and takes whole chunks of it: the plan's K chunks, in plan
order (group 0's chunks, then group 1's, ...), are cut into N contiguous blocks of floor(K/N) or
ceil(K/N) chunks, like `numpy.array_split`; shard I trains block I. So

  - every run is trained by the same compiled program, on the same batch of runs, as in a
    single-process sweep: merged results are bit-identical to it (on the same device count);
  - chunk and shape-group numbers, and each run's `index_in_chunk`, are the single-process ones,
    so `jaxsim merge` just places the shards' chunk folders side by side;
  - a contiguous block touches few shape groups (one compile per group per shard).

A plan with fewer chunks than shards is refused (set `sweep.chunk_size` so it has more).

A shard directory is an ordinary results directory holding only its runs (`runs.csv`,
`metrics.npz` rows in run_id order, `checkpoints/` of its chunks) plus `shard.json`:
    {"shard": I, "count": N, "num_runs": R (whole table), "device_count": D,
     "plan_digest": sha256 of the whole plan,
     "chunks": [{"shape_group", "chunk", "size", "steps", "run_ids": [...]}, ...]}
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from jaxsim import grid, results
from jaxsim.config import ConfigError

MANIFEST = "shard.json"
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: str) -> Shard:
    """'I/N' (0 <= I < N) -> Shard; anything else is one clear ConfigError."""
    m = _SPEC.match(str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return Shard(int(m.group(1)), int(m.group(2)))


def shard_dir(out: Path, index: int, count: int) -> Path:
    """Where shard I of N of the sweep `out` goes by default: a sibling `<out>_shards` folder."""
    out = Path(out)
    return out.parent / f"{out.name}_shards" / f"shard_{index:03d}_of_{count:03d}"


def _all_chunks(groups: list[grid.Group]) -> list[tuple[grid.Group, grid.Chunk]]:
    return [(g, c) for g in groups for c in g.chunks]


def _block(num_chunks: int, shard: Shard) -> range:
    """Chunk positions of block I of N (numpy.array_split's sizes: the first K % N get one more)."""
    base, extra = divmod(num_chunks, shard.count)
    start = shard.index * base + min(shard.index, extra)
    return range(start, start + base + (shard.index < extra))


def select(groups: list[grid.Group], shard: Shard, device_count: int = 1) -> list[grid.Group]:
    """The shard's part of the plan: groups holding only its chunks (numbers unchanged)."""
    pairs = _all_chunks(groups)
    if len(pairs) < shard.count:
        raise ConfigError(f"--shard {shard}: the plan has only {len(pairs)} chunk(s) "
                          f"({len(groups)} shape group(s)), fewer than {shard.count} shards; "
                          f"shards split whole chunks: {_advice(groups, shard.count, device_count)}")
    mine: dict[int, grid.Group] = {}
    for position in _block(len(pairs), shard):
        group, chunk = pairs[position]
        part = mine.setdefault(group.index, grid.Group(group.index, group.spec))
        part.chunks.append(chunk)
        part.runs.extend(chunk.runs)
    return list(mine.values())


def _advice(groups: list[grid.Group], count: int, device_count: int) -> str:
    """The largest sweep.chunk_size giving >= `count` chunks (chunks are padded to a multiple
    of the device count), or the most shards this sweep can have."""
    sizes = [len(g.runs) for g in groups]

    def num_chunks(size: int) -> int:
        return sum(math.ceil(n / (math.ceil(min(size, n) / device_count) * device_count))
                   for n in sizes)

    fits = [s for s in range(max(sizes), 0, -1) if num_chunks(s) >= count]
    if fits:
        return f"set sweep.chunk_size={fits[0]} (or less), or use fewer shards"
    return (f"on {device_count} device(s) this sweep has at most {num_chunks(1)} chunk(s): "
            f"use at most {num_chunks(1)} shards")


def _chunk_entries(groups: list[grid.Group]) -> list[dict]:
    return [{"shape_group": g.index, "chunk": c.index, "size": c.size,
             "steps": g.spec.train.steps, "run_ids": [r.run_id for r in c.runs]}
            for g, c in _all_chunks(groups)]


def plan_digest(groups: list[grid.Group], device_count: int) -> str:
    """sha256 of the whole plan: shards started on differently planned machines differ here."""
    text = json.dumps([device_count, _chunk_entries(groups)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def manifest(shard: Shard, runs: list, groups: list[grid.Group], mine: list[grid.Group],
             device_count: int) -> dict:
    return {"shard": shard.index, "count": shard.count, "num_runs": len(runs),
            "device_count": device_count, "plan_digest": plan_digest(groups, device_count),
            "group_sizes": {str(g.index): g.chunks[0].size for g in groups},
            "chunks": _chunk_entries(mine)}


def write_manifest(out: Path, doc: dict) -> None:
    """shard.json: the header on one line, then one line per chunk."""
    head = json.dumps({k: v for k, v in doc.items() if k != "chunks"})
    body = ",\n".join(json.dumps(c) for c in doc["chunks"])
    text = f'{head[:-1]}, "chunks": [\n{body}\n]}}\n'
    results.atomic_write(Path(out) / MANIFEST, lambda p: p.write_text(text))


def read_manifest(out: Path) -> dict:
    path = Path(out) / MANIFEST
    try:
        doc = json.loads(path.read_text())
        Shard(int(doc["shard"]), int(doc["count"]))
        [doc[k] for k in ("num_runs", "device_count", "plan_digest", "chunks")]
        return doc
    except FileNotFoundError:
        raise ConfigError(f"'{out}' is not a shard directory (no {MANIFEST}); shards are made "
                          f"by `jaxsim sweep CONFIG --shard I/N`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def group_sizes(out: Path) -> dict[int, int]:
    """The chunk size of every shape group of the whole plan the shard was cut from."""
    doc = read_manifest(out)
    return {int(g): int(size) for g, size in doc.get("group_sizes", {}).items()}


def reselect(out: Path, runs: list, groups: list[grid.Group], device_count: int
             ) -> list[grid.Group]:
    """On resume: the shard's chunks again, checking the plan is the one it started with."""
    doc = read_manifest(out)
    shard = Shard(int(doc["shard"]), int(doc["count"]))
    if doc["plan_digest"] != plan_digest(groups, device_count):
        raise ConfigError(f"shard {shard} in '{out}' was planned for {doc['device_count']} "
                          f"device(s) and {doc['num_runs']} runs; here the plan differs "
                          f"({device_count} device(s), {len(runs)} runs): resume it on a "
                          f"machine with {doc['device_count']} device(s)")
    return select(groups, shard, device_count)
