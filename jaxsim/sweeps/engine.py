"""The compiled sweep program: jit(vmap(train_interval)) over a chunk of runs, the run axis
sharded over every device, with orbax checkpoints of the stacked state and bit-exact resume.

One compile per shape group (and chunk size): the jitted functions take the `Spec` (and the
`vmap_size` speed knob) as their only static arguments; seeds and hyperparameters are traced
arrays with a leading run axis.
"""
from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import time
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxsim import results, stages, training
from jaxsim.sweeps import distributed
from jaxsim.config import Spec
from jaxsim.grid import Chunk
from jaxsim.program_caches import program_cache

log = logging.getLogger(__name__)


def _run_keys(seeds_R: jax.Array) -> jax.Array:
    return jax.vmap(jax.random.key)(seeds_R)


def _stacked_init(spec: Spec, seeds_R: jax.Array, hparams: dict) -> training.loop.State:
    return jax.vmap(training.init, (0, None, 0))(_run_keys(seeds_R), spec, hparams)


def _stacked_fixed(spec: Spec, seeds_R: jax.Array, hparams: dict) -> dict:
    """Every run's `training.fixed_inputs` (per-run constants, fixed evaluation batches) [R]."""
    return jax.vmap(training.fixed_inputs, (0, None, 0))(_run_keys(seeds_R), spec, hparams)


def over_runs(fn, args, vmap_size: int):
    """Apply `fn` to every run of the stacked pytree `args` (leading run axis R).

    vmap_size 0: one vmap over all R runs. vmap_size b > 0: each device takes its own R/D runs
    (shard_map over the run axis) and goes through them `b` at a time with lax.map — on CPUs,
    narrower batched matmuls run faster than one wide vmap.
    """
    if vmap_size == 0:
        return jax.vmap(fn)(args)

    def local(chunk):
        return jax.lax.map(fn, chunk, batch_size=vmap_size)

    if jax.device_count() == 1:
        return local(args)
    sharding = run_sharding()
    return jax.shard_map(local, mesh=sharding.mesh, in_specs=sharding.spec,
                         out_specs=sharding.spec)(args)


@functools.cache
def run_sharding() -> NamedSharding:
    """Leading (run) axis split over all devices; everything else replicated."""
    return NamedSharding(Mesh(np.array(jax.devices()), ("runs",)), P("runs"))


def chunk_inputs(spec: Spec, chunk: Chunk) -> tuple[jax.Array, dict]:
    """Seeds [C] and hparams pytree [C] of a chunk (in a staged group with each run's frozen
    source, `jaxsim.stages.inputs`), padded with repeats of its last run."""
    runs = chunk.runs + [chunk.runs[-1]] * (chunk.size - len(chunk.runs))
    sharding = run_sharding()
    seeds = jax.device_put(np.array([r.seed for r in runs], np.int32), sharding)
    return seeds, jax.device_put(stages.inputs(spec, runs), sharding)


def abstract_chunk(spec: Spec, seeds, hparams, metrics: dict[str, np.ndarray]):
    """Shapes, dtypes and shardings of a chunk checkpoint (the orbax restore target)."""
    leaves, treedef = jax.tree.flatten((seeds, hparams))
    shapes = tuple((leaf.shape, leaf.dtype) for leaf in leaves)
    return {"state": _abstract_out(_stacked_init, spec, treedef, shapes), "metrics": metrics}


def abstract_fixed(spec: Spec, seeds, hparams) -> dict:
    """Shapes, dtypes and run-axis sharding of a chunk's fixed inputs (`_stacked_fixed`)."""
    leaves, treedef = jax.tree.flatten((seeds, hparams))
    return _abstract_out(_stacked_fixed, spec, treedef,
                         tuple((leaf.shape, leaf.dtype) for leaf in leaves))


@program_cache(maxsize=256)
def _abstract_out(fn, spec: Spec, treedef, shapes: tuple):
    """The sharded output shapes of `fn(spec, seeds, hparams)` for a chunk's input shapes:
    traced once per function, shape group and chunk size (the memory fit and every chunk of the
    group ask; each trace of init takes ~0.2-0.4 s, a sweep of many chunks paid it once per
    chunk)."""
    seeds, hparams = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in shapes])
    out = jax.eval_shape(functools.partial(fn, spec), seeds, hparams)
    sharding = run_sharding()
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), out)


def restore_latest(checkpoints: results.ChunkCheckpoints, target) -> dict | None:
    """The newest readable checkpoint of a chunk ({"state", "metrics", "step"}), or None if it
    has none. A step that cannot be read (damaged files) is set aside as step_X.damaged with one
    line saying so, and the next older one is tried: the resumed run retrains the lost steps to
    the same bits."""
    for step in reversed(checkpoints.steps()):
        try:
            restored = checkpoints.restore(step, target)
        except Exception as e:   # orbax / tensorstore raise many kinds on damaged data
            moved = checkpoints.set_aside(step)
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            log.warning(f"jaxsim: checkpoint {checkpoints.path(step)} cannot be read ({reason}); "
                        f"set aside as {moved.name}, resuming from an older one")
            continue
        return {**restored, "step": step}
    return None


class _TraceLog:
    """Where a trace is counted: jit gets it as a static argument that equals every other
    _TraceLog, so one jit cache serves every `Programs` of the process (a Spec traced once is
    never traced again) while each trace is counted by the `Programs` whose call caused it."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()

    def __hash__(self) -> int:
        return 0

    def __eq__(self, other) -> bool:
        return isinstance(other, _TraceLog)


def _init_chunk(log: _TraceLog, spec: Spec, seeds_R: jax.Array, hparams: dict):
    """The chunk's initial state and its fixed inputs (`_stacked_fixed`): what runs once per
    chunk, so one program compiled at -O0 (`init_compiler_options`)."""
    log.counts["init", spec] += 1
    return _stacked_init(spec, seeds_R, hparams), _stacked_fixed(spec, seeds_R, hparams)


def _interval_chunk(log: _TraceLog, spec: Spec, vmap_size: int, state, fixed,
                    seeds_R: jax.Array, hparams: dict):
    """`eval_every` steps of every run in the chunk, then their evaluation metrics [R]."""
    log.counts["interval", spec] += 1
    return over_runs(lambda a: training.train_interval(a[0], a[1], spec, a[2], a[3]),
                     (state, _run_keys(seeds_R), hparams, fixed), vmap_size)


class CompileCache:
    """The process's jitted sweep functions and compiled interval programs (what it holds only
    saves time: every `Programs` of the process shares the default one, `compile_cache()`)."""

    def __init__(self) -> None:
        sharding = run_sharding()   # every output's run axis sharded over the devices
        self.init = jax.jit(_init_chunk, static_argnums=(0, 1), out_shardings=sharding)
        self.interval = jax.jit(_interval_chunk, static_argnums=(0, 1, 2), donate_argnums=3,
                                out_shardings=sharding)
        # ("interval", spec, chunk size, vmap_size) or ("init", spec, chunk size) -> compiled
        self.executables: dict = {}


def init_compiler_options() -> dict | None:
    """The init program's XLA options: on a CPU, LLVM at -O0. It runs once per chunk and
    computes little (a few random draws per parameter), but its many small threefry kernels made
    LLVM's optimiser most of its compile: 4.3 s -> 1.2 s of CPU time for the quickstart's
    (benchmarks/compile_times.py, docs/performance.md); its values are the same up to the last
    bit of a few floats, identically in every process."""
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def interval_compiler_options(spec: Spec) -> dict | None:
    """The interval program's XLA options: on a CPU, LLVM at -O1 for the transformer and U-Net
    models. XLA's own (HLO) optimisations are the same at every level and their matmuls are
    library calls, so LLVM's higher levels bought no speed there: per-interval CPU time at -O1
    vs the default -O3 (best of 4-8, one device, one thread, interleaved): quickstart 4.12 vs
    4.12 s, matrix_completion 6.97 vs 7.12 s, concept_space 1.21 vs 1.28 s; and compile CPU time
    fell 15-25 % (8.0 vs 9.7 s, 34 vs 42 s). The SAE step, mostly element-wise (top-k, ReLU
    over every latent), ran 3-5 % slower at -O1 for 2 % less compile, so it keeps the default
    (docs/performance.md)."""
    if jax.default_backend() != "cpu" or spec.model.name == "sae":
        return None
    return {"xla_backend_optimization_level": 1}


@program_cache(maxsize=1)
def compile_cache() -> CompileCache:
    """The process's compile cache (made once the devices exist)."""
    return CompileCache()


class Programs:
    """The compiled programs of one sweep invocation, and what they cost.

    `sweeps.start` and `sweeps.resume` make one (pass your own to inspect it): the traces its
    calls caused (`traces[kind, spec]`: once per Spec and process), the compiles it did with
    their wall time (`compile_seconds["interval", spec, chunk size, vmap_size]`: the interval
    program is compiled once, shared by the memory fit and training, and reused by later
    invocations of the process; `compile_seconds["init", spec, chunk size]` likewise), and the
    host work that blocks the loop between compiled calls, by kind (`host_seconds`).
    """

    def __init__(self, cache: CompileCache | None = None) -> None:
        self.cache = cache or compile_cache()
        self._log = _TraceLog()
        self.compile_seconds: dict[tuple, float] = {}
        self.compile_spans: dict[tuple, tuple[float, float]] = {}   # key -> (start, end)
        self.host_seconds: collections.Counter = collections.Counter()

    @property
    def traces(self) -> collections.Counter:
        return self._log.counts

    def _timed(self, key: tuple, t0: float) -> None:
        t1 = time.perf_counter()
        self.compile_seconds[key] = t1 - t0
        self.compile_spans[key] = (t0, t1)

    def compile_wall(self, keys=None) -> float:
        """Wall seconds during which at least one of the compiles `keys` (default: all) ran:
        the init and interval programs of a chunk compile at the same time (`train_chunk`),
        so their `compile_seconds` overlap."""
        spans = sorted(self.compile_spans[k] for k in (self.compile_spans if keys is None
                                                         else keys) if k in self.compile_spans)
        total, end = 0.0, float("-inf")
        for a, b in spans:
            total += max(0.0, b - max(a, end))
            end = max(end, b)
        return total

    def init_chunk(self, spec: Spec, seeds_R: jax.Array, hparams: dict) -> training.loop.State:
        """The stacked initial state [C, ...] of a chunk, sharded over the run axis."""
        return self.start_chunk(spec, seeds_R, hparams)[0]

    def start_chunk(self, spec: Spec, seeds_R: jax.Array, hparams: dict) -> tuple:
        """(initial state, fixed inputs) of a chunk, stacked [C, ...] and sharded over the run
        axis; the fixed inputs (per-run constants, evaluation batches) go to every
        `interval_chunk`."""
        return self.compiled_init(spec, seeds_R, hparams)(seeds_R, hparams)

    def compiled_init(self, spec: Spec, seeds_R, hparams):
        """The compiled `start_chunk` for a shape group and chunk size (once per process)."""
        key = ("init", spec, seeds_R.shape[0])
        if key not in self.cache.executables:
            t0 = time.perf_counter()
            self.cache.executables[key] = self.cache.init.lower(
                self._log, spec, seeds_R, hparams).compile(init_compiler_options())
            self._timed(key, t0)
            log.debug(f"jaxsim: compiled the init program for chunks of {key[2]} runs in "
                      f"{self.compile_seconds[key]:.2f}s")
        return self.cache.executables[key]

    def compile_chunk(self, spec: Spec, state, seeds_R, hparams, vmap_size: int = 0):
        """Both programs of a chunk size, compiled at the same time: the init program in a
        second thread while the interval program compiles in this one (XLA's compiles release
        the GIL, so on a 2-core CPU they overlap instead of queueing). Returns the compiled
        interval; `state` may be abstract."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            init = pool.submit(self.compiled_init, spec, seeds_R, hparams)
            interval = self.compiled_interval(spec, state, seeds_R, hparams, vmap_size)
            init.result()
        return interval

    def interval_chunk(self, spec: Spec, state, seeds_R: jax.Array, hparams: dict,
                       vmap_size: int = 0, fixed=None):
        """`eval_every` steps of every run in the chunk, then their evaluation metrics [C].
        `fixed`: the chunk's fixed inputs (`start_chunk`), else computed here."""
        if fixed is None:
            fixed = self.start_chunk(spec, seeds_R, hparams)[1]
        return self.compiled_interval(spec, state, seeds_R, hparams, vmap_size, fixed)(
            state, fixed, seeds_R, hparams)

    def compiled_interval(self, spec: Spec, state, seeds_R, hparams, vmap_size: int = 0,
                          fixed=None):
        """The compiled `interval_chunk` for a shape group and chunk size (compiled once per
        process, timed here when compiled here); `state` and `fixed` may be abstract (fixed
        None: its shapes from `_stacked_fixed`)."""
        key = ("interval", spec, seeds_R.shape[0], vmap_size)
        if key not in self.cache.executables:
            if fixed is None:
                fixed = abstract_fixed(spec, seeds_R, hparams)
            t0 = time.perf_counter()
            self.cache.executables[key] = self.cache.interval.lower(
                self._log, spec, vmap_size, state, fixed, seeds_R, hparams).compile(
                    interval_compiler_options(spec))
            self._timed(key, t0)
            log.debug(f"jaxsim: compiled the interval program of {spec.task.name} for chunks "
                      f"of {key[2]} runs (vmap_size {vmap_size}) in "
                      f"{self.compile_seconds[key]:.2f}s")
        else:
            log.debug(f"jaxsim: reusing the compiled interval program for chunks of {key[2]} runs")
        return self.cache.executables[key]

    def train_chunk(self, spec: Spec, chunk: Chunk, checkpoints: results.ChunkCheckpoints,
                    checkpoint_every: int, on_interval: Callable[[int, dict[str, np.ndarray]], None],
                    vmap_size: int = 0) -> dict[str, np.ndarray]:
        """Train every run of a chunk to the end, resuming from its latest checkpoint.

        Returns metrics {name: [C, E]} (padding rows included). `on_interval(step, row)` is called
        with each evaluation's metrics ([C] arrays) as soon as they reach the host.
        """
        every, total = spec.train.eval_every, spec.train.steps
        seeds, hparams = chunk_inputs(spec, chunk)
        num_evals = total // every
        metrics = {n: np.full((chunk.size, num_evals), np.nan, np.float32)
                   for n in training.metric_names(spec)}
        checkpoints.clean_partial()
        abstract = abstract_chunk(spec, seeds, hparams, metrics)
        step_fn = self.compile_chunk(spec, abstract["state"], seeds, hparams, vmap_size)
        restored = restore_latest(checkpoints, abstract)
        state, fixed = self.start_chunk(spec, seeds, hparams)   # fixed: needed on resume too
        start = 0
        if restored is not None:
            state, metrics, start = restored["state"], dict(restored["metrics"]), restored["step"]
            log.debug(f"jaxsim: restored {checkpoints.path(start)}")

        pending = None  # metrics of the previous interval, fetched after the next one is dispatched

        def flush():
            step, row = pending
            row = distributed.to_host(row)  # waits for the device (and gathers from every process)
            t0 = time.perf_counter()
            for name, values in row.items():
                metrics[name][:, step // every - 1] = values
            on_interval(step, row)
            self.host_seconds["metrics"] += time.perf_counter() - t0

        def save(step):
            t0 = time.perf_counter()
            checkpoints.save(step, state, metrics)
            self.host_seconds["checkpoints"] += time.perf_counter() - t0
            log.debug(f"jaxsim: saving {checkpoints.path(step)} (async)")

        last_saved = start
        for step in range(start + every, total + 1, every):
            state, row = step_fn(state, fixed, seeds, hparams)
            if pending is not None:
                flush()
            pending = (step, row)
            if step // checkpoint_every > last_saved // checkpoint_every or step in checkpoints.keep:
                flush()
                pending = None
                save(step)
                last_saved = step
        if pending is not None:
            flush()
        t0 = time.perf_counter()
        checkpoints.wait()
        self.host_seconds["checkpoints"] += time.perf_counter() - t0
        return metrics
