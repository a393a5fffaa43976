"""`jaxsim analyze DIR`: the testbed's analysis of every run at every saved checkpoint.

Reads config.yaml, runs.csv, metrics.npz and the orbax checkpoints (never re-trains) and hands
them to the testbed's `Analysis` (`jaxsim.testbed`), which returns the analysis.json document
(and may write its own DIR/analysis_*.npz). `map_runs` is the one compiled wrapper every
testbed's per-run analysis goes through: jit(vmap) over a chunk's runs, each run's key from its
seed. Loading the runs and checkpoints is shared (`analysis/checkpoints.py`).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxsim import config as cfglib
from jaxsim import results, summaries, testbeds
from jaxsim.config import ConfigError
from jaxsim.testbed import AnalysisRequest
from jaxsim.program_caches import program_cache

log = logging.getLogger(__name__)


def analyze(out: Path, num_sequences: int = 64, lengths: list[int] | None = None) -> Path:
    """Analyse a sweep directory with its testbed's analysis; `num_sequences` = analysis
    examples per run (sequences, matrices, points, samples)."""
    out = Path(out)
    results.check_config(out)
    if not (out / results.CONFIG).is_file() or not (out / results.RUNS).is_file():
        raise ConfigError(f"'{out}' is not a sweep directory (needs {results.CONFIG} and "
                          f"{results.RUNS})")
    cfg = cfglib.load(out / results.CONFIG)
    testbed = testbeds.of(cfg)
    if testbed.analysis is None:
        raise ConfigError(f"task.name={cfg.task.name} has no analysis")
    if lengths and "context_lengths" not in testbed.analysis.options:
        takes = [n for n, tb in testbeds.builtin().items()
                 if tb.analysis is not None and "context_lengths" in tb.analysis.options]
        raise ConfigError(f"--context-lengths applies to task.name={' or '.join(takes)} only")
    results.check_writable(out)   # before the work, not after it
    with results.writer_lock(out, "analyze"):
        rows = results.read_runs(out)
        log.info(f"jaxsim: analysing {len(rows)} runs of {out} (task.name={cfg.task.name}, "
                 f"{num_sequences} examples per run)")
        started = time.perf_counter()
        doc = testbed.analysis.run(AnalysisRequest(out, cfg, rows, num_sequences, lengths))
        path = out / results.ANALYSIS
        results.atomic_write(path, lambda p: p.write_text(json.dumps(doc)))
        log.info(f"jaxsim: analysis done in {time.perf_counter() - started:.1f}s")
        _summary(out)
    return path


def _summary(out: Path) -> None:
    """summary.csv with the analysis's columns, and its table in the log; a damaged or
    missing metrics.npz (which the analysis does not read) leaves it out with a warning."""
    try:
        table = summaries.write(out)
    except (ConfigError, FileNotFoundError) as e:
        log.warning(f"jaxsim: no {summaries.SUMMARY} ({e})")
        return
    log.info(summaries.render(table, summaries.title(table, f"-> {out / summaries.SUMMARY}",
                                                     "final results and analysis")))


def map_runs(fn, chunk, *args, extra: bool = False, last: bool = False, devices=None):
    """`fn(params, key, spec, hparams, *args)` for every run of `chunk` (an
    `analysis.checkpoints.ChunkParams`), vmapped over its runs in one compiled call whose run
    axis is sharded over the local devices, as in training; with `extra`,
    `fn(params, extra, key, spec, hparams, *args)` (an SAE's aux state). Array arguments are
    shared by every run; any other argument is static (hashable: part of the compile). With
    `last`, fn sees the last saved checkpoint only (params without the step axis). `devices`
    (default: every local device) are the devices the run axis is split over. Returns fn's
    outputs with a leading run axis."""
    program, inputs, num_runs = _prepare(fn, chunk, args, extra, last, devices)
    return jax.tree.map(lambda a: a[:num_runs], program(*inputs))


def lower_runs(fn, chunk, *args, extra: bool = False, last: bool = False):
    """The lowered program `map_runs` would run (for inspecting its HLO)."""
    program, inputs, _ = _prepare(fn, chunk, args, extra, last)
    return program.lower(*inputs)


def _prepare(fn, chunk, args: tuple, extra: bool, last: bool, devices=None):
    statics = tuple((i, a) for i, a in enumerate(args) if not isinstance(a, jax.Array))
    arrays = tuple(a for a in args if isinstance(a, jax.Array))
    params, aux = chunk.params_RxS, chunk.extra_RxS if extra else None
    if last:
        params, aux = jax.tree.map(lambda a: np.asarray(a)[:, -1], (params, aux))
    per_run = (params, aux, chunk.seeds_R, chunk.hparams_R)
    num_runs = chunk.seeds_R.shape[0]
    devices = list(devices or jax.local_devices())
    pad = -num_runs % len(devices)      # repeats of the last run, so every device gets a share
    # padded on the host: as jax ops, each leaf's concatenate was a compile of its own
    per_run = jax.tree.map(lambda a: np.concatenate([np.asarray(a)] + [np.asarray(a)[-1:]] * pad),
                           per_run)
    sharding = NamedSharding(Mesh(np.array(devices), ("runs",)), P("runs"))
    per_run = jax.device_put(per_run, sharding)
    program = _program(fn, chunk.spec, statics, len(args), extra)
    return program, (*per_run, arrays), num_runs


@program_cache()
def _program(fn, spec, statics: tuple, num_args: int, extra: bool):
    static = dict(statics)

    def every_run(params_R, extra_R, seeds_R, hparams_R, arrays):
        keys_R = jax.vmap(jax.random.key)(seeds_R)
        shared = iter(arrays)
        args = [static[i] if i in static else next(shared) for i in range(num_args)]

        def one(params, aux, key, hparams):
            if extra:
                return fn(params, aux, key, spec, hparams, *args)
            return fn(params, key, spec, hparams, *args)

        return jax.vmap(one)(params_R, extra_R, keys_R, hparams_R)

    return jax.jit(every_run)
