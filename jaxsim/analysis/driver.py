"""`jaxsim analyze DIR`: the testbed's analysis of every run at every saved checkpoint.

Reads config.yaml, runs.csv, metrics.npz and the orbax checkpoints (never re-trains) and hands
them to the testbed's `Analysis` (`jaxsim.testbed`), which returns the analysis.json document
(and may write its own DIR/analysis_*.npz). `map_runs` is the one compiled wrapper every
testbed's per-run analysis goes through: jit(vmap) over a chunk's runs, each run's key from its
seed. Loading the runs and checkpoints is shared (`analysis/checkpoints.py`).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import jax

from jaxsim import config as cfglib
from jaxsim import results, testbeds
from jaxsim.config import ConfigError
from jaxsim.testbed import AnalysisRequest


def analyze(out: Path, num_sequences: int = 64, lengths: list[int] | None = None) -> Path:
    """Analyse a sweep directory with its testbed's analysis; `num_sequences` = analysis
    examples per run (sequences, matrices, points, samples)."""
    out = Path(out)
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
    doc = testbed.analysis.run(AnalysisRequest(out, cfg, results.read_runs(out), num_sequences,
                                               lengths))
    path = out / results.ANALYSIS
    results.atomic_write(path, lambda p: p.write_text(json.dumps(doc)))
    return path


def map_runs(fn, chunk, *args, extra: bool = False):
    """`fn(params, key, spec, hparams, *args)` for every run of `chunk` (an
    `analysis.checkpoints.ChunkParams`), vmapped over its runs in one compiled call; with
    `extra`, `fn(params, extra, key, spec, hparams, *args)` (an SAE's aux state). Array
    arguments are shared by every run; any other argument is static (hashable: part of the
    compile). Returns fn's outputs with a leading run axis."""
    statics = tuple((i, a) for i, a in enumerate(args) if not isinstance(a, jax.Array))
    arrays = tuple(a for a in args if isinstance(a, jax.Array))
    program = _program(fn, chunk.spec, statics, len(args), extra)
    return program(chunk.params_RxS, chunk.extra_RxS if extra else None, chunk.seeds_R,
                   chunk.hparams_R, arrays)


@functools.cache
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
