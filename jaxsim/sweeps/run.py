"""Start or resume a sweep: plan the runs, train every chunk, write the results directory."""
from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from jaxsim import config as cfglib
from jaxsim.config import Config, ConfigError
from jaxsim import logs, results, stages, summaries, testbeds
from jaxsim import grid
from jaxsim.sweeps import distributed, engine, live, memory, shards


log = logging.getLogger(__name__)


def start(cfg: Config, out: Path, progress: bool = True,
          shard: shards.Shard | None = None, programs: engine.Programs | None = None) -> Path:
    """Train a new sweep into `out` (which must not exist or be empty); with `shard` (I/N),
    only that deterministic slice of it (see `jaxsim.sweeps.shards`). `programs` holds the
    compiled programs and their costs (a fresh `engine.Programs` by default)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or not results.is_empty(out)):
        raise ConfigError(f"output directory '{out}' is not empty; continue it with "
                          f"`jaxsim resume {out}` or choose another --out")
    programs = programs or engine.Programs()
    t0 = time.perf_counter()   # the fit's compiles are timed too
    cfg = stages.resolve(cfg)  # a staged sweep's source checked, its path made absolute
    runs = grid.expand(cfg)
    # every process has checked `out` before any writes (and gloo's context exists before the
    # processes' compiles below, which may take unequal times)
    distributed.barrier("jaxsim-start")
    # the directory is made (and its writability checked) before anything is compiled; one
    # this call made is removed again if the sweep fails before writing into it
    created = results.make_output_dir(out) if distributed.is_writer() else False
    try:
        with results.writer_lock(out, "sweep"):
            return _start(cfg, out, runs, progress, shard, programs, t0)
    except BaseException:
        if created and results.is_empty(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _start(cfg: Config, out: Path, runs: list[grid.Run], progress: bool,
           shard: shards.Shard | None, programs: engine.Programs, t0: float) -> Path:
    groups = _fit_to_memory(cfg, runs, programs)
    mine = groups if shard is None else shards.select(groups, shard, jax.device_count())
    out.mkdir(parents=True, exist_ok=True)
    results.write_config(out, cfg)
    results.write_plan(out, groups, jax.device_count())
    if shard is not None:
        shards.write_manifest(out, shards.manifest(shard, runs, groups, mine, jax.device_count()))
    groups = mine
    results.write_runs(out, cfg, groups, {})
    return _train(cfg, out, runs, groups, progress, programs, t0)


def dry_run(cfg: Config, out: Path) -> list[str]:
    """The plan `start(cfg, out)` would train, as lines of text, with nothing written: runs,
    shape groups, chunks, each group's compiled peak memory per device and the compile count.
    Each group's program is compiled (that is how its memory is known; the compile is cached)."""
    out = Path(out)
    programs = engine.Programs()
    cfg = stages.resolve(cfg)
    runs = grid.expand(cfg)
    groups = _fit_to_memory(cfg, runs, programs)
    devices = jax.device_count()
    limit = memory.budget_bytes(cfg.sweep.memory_budget)
    axes = ", ".join(f"{k} x {len(v)}" for k, v in cfg.sweep.axes.items()) or "no axes"
    grids = f", {len(cfg.sweep.grids)} grid(s)" if cfg.sweep.grids else ""
    lines = [f"dry run -> {out} (nothing written{'' if not out.exists() else '; it exists'})",
             f"runs: {len(runs)} ({axes}{grids}; seeds {cfg.sweep.seeds}), {devices} device(s), "
             f"memory budget {memory.human(limit) if limit else 'none'} per device"]
    for g in groups:
        peak = memory.measure(programs, g.spec, g.runs, g.chunks[0].size, cfg.sweep.vmap_size)
        lines.append(f"shape group {g.index}: {len(g.runs)} runs in {len(g.chunks)} chunk(s) of "
                     f"{g.chunks[0].size}, {g.spec.train.steps} steps each, peak "
                     f"{memory.human(peak)} per device")
    lines.append(f"compiles: {len(groups)} (one per shape group); run-steps: "
                 f"{sum(len(g.runs) * g.spec.train.steps for g in groups)}")
    return lines


def resume(out: Path, progress: bool = True, programs: engine.Programs | None = None) -> Path:
    """Continue an interrupted sweep from each chunk's latest checkpoint."""
    out = Path(out)
    if not out.is_dir():
        raise ConfigError(f"results directory '{out}' does not exist")
    results.check_config(out)
    if not (out / results.CONFIG).is_file():
        raise ConfigError(f"'{out}' is not a sweep directory (no {results.CONFIG}); "
                          f"start one with `jaxsim sweep CONFIG --out {out}`")
    if distributed.is_writer():
        results.check_writable(out)
    with results.writer_lock(out, "resume"):
        if results.is_finished(out):
            logs.RESULT.info(f"jaxsim: {out} is finished (every run done): nothing to resume")
            return out
        return _resume(out, progress, programs)


def _resume(out: Path, progress: bool, programs: engine.Programs | None) -> Path:
    cfg = cfglib.load(out / results.CONFIG)
    # _recorded_sizes: the chunk sizes of a directory from before plan.json, to re-plan it
    runs, groups = results.read_plan(out, jax.device_count(), _recorded_sizes(out), repair=True)
    if (out / shards.MANIFEST).is_file():
        groups = shards.reselect(out, runs, groups, jax.device_count())
    return _train(cfg, out, runs, groups, progress, programs or engine.Programs(),
                  time.perf_counter())


def _recorded_sizes(out: Path) -> dict[int, int] | None:
    """Each shape group's chunk size as the sweep started with it (fitted to its memory budget
    on that machine): from a shard's manifest (the whole plan's) or from runs.csv."""
    if (out / shards.MANIFEST).is_file():
        return shards.group_sizes(out)
    if (out / results.PLAN).is_file():
        return None     # the plan holds them (and a damaged runs.csv is rewritten from it)
    if (out / results.RUNS).is_file():
        return grid.recorded_sizes(results.read_runs(out))
    return None


def _fit_to_memory(cfg: Config, runs: list[grid.Run], programs: engine.Programs
                   ) -> list[grid.Group]:
    """The plan with each group's chunks as large as `sweep.chunk_size` asks and
    `sweep.memory_budget` allows (each size checked by compiling it: that compile is cached and
    trains the group)."""
    devices = jax.device_count()
    groups = grid.plan(cfg, runs, devices)
    limit = memory.budget_bytes(cfg.sweep.memory_budget)
    if limit is None:
        return groups
    sizes = {}
    for g in groups:
        size, peak = memory.fit_chunk_size(programs, g.spec, g.runs, g.chunks[0].size, devices,
                                           cfg.sweep.memory_budget, cfg.sweep.vmap_size,
                                           where=f"shape group {g.index} ")
        sizes[g.index] = size
        if size < g.chunks[0].size:
            log.info(f"jaxsim: shape group {g.index}: chunks of {size} runs (split from "
                 f"{g.chunks[0].size}), {memory.human(peak)} per device of a "
                 f"{memory.human(limit)} budget")
    return grid.plan(cfg, runs, devices, sizes)


def _train(cfg: Config, out: Path, runs: list[grid.Run], groups: list[grid.Group],
           progress: bool, programs: engine.Programs, t0: float) -> Path:
    """Train every chunk; `t0` = when the invocation started (planning may have compiled)."""
    total_steps = sum(g.spec.train.steps for g in groups for _ in g.chunks)
    bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=not progress or not distributed.is_writer())
    log.info(f"jaxsim: {sum(len(g.runs) for g in groups)} runs in {len(groups)} shape group(s), "
             f"{sum(len(g.chunks) for g in groups)} chunk(s), {jax.device_count()} device(s) "
             f"-> {out}")
    per_chunk, status = {}, {}
    run_steps = 0
    for group in groups:
        spec = group.spec
        keep = grid.save_steps(cfg, spec)
        testbed = testbeds.of(spec)
        units_per_step = spec.train.batch_size * testbed.per_example(spec)
        for chunk in group.chunks:
            ckpt = results.ChunkCheckpoints(results.chunk_dir(out, group.index, chunk.index), keep)
            resumed_at = (ckpt.steps() or [0])[-1]
            bar.update(resumed_at)
            real = len(chunk.runs)
            where = f"[group {group.index} {chunk.name}]"
            line = live.LiveLine(testbed, [run.values for run in chunk.runs])

            def on_interval(step, row, real=real, where=where, line=line):
                nonlocal run_steps
                bar.update(spec.train.eval_every)
                run_steps += real * spec.train.eval_every
                rate = run_steps / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{rate:.0f} runs·steps/s, "
                                    f"{rate * units_per_step:.3g} {testbed.unit}/s")
                log.info(f"{where} step {step}/{spec.train.steps}  {line(step, row)}")

            started = time.perf_counter()
            metrics = programs.train_chunk(spec, chunk, ckpt, cfg.sweep.checkpoint_every,
                                           on_interval, cfg.sweep.vmap_size)
            log.debug(f"jaxsim: {where} {real} runs trained from step {resumed_at} to "
                      f"{spec.train.steps} in {time.perf_counter() - started:.2f}s "
                      f"(checkpoints in {ckpt.directory})")
            per_chunk[group.index, chunk.index] = metrics
            for i, run in enumerate(chunk.runs):
                status[run.run_id] = results.run_status(metrics, i)
            results.write_runs(out, cfg, groups, status)
    bar.close()
    steps, arrays = results.assemble(runs, groups, per_chunk)
    results.write_metrics(out, steps, arrays, testbeds.of(cfg).metric_aliases)
    results.write_runs(out, cfg, groups, status,
                       summaries.run_columns(testbeds.of(cfg), {"step": steps, **arrays},
                                             summaries.metric_order(groups)))
    if distributed.is_writer():     # the files it reads are process 0's
        table = summaries.write(out)
        heading = summaries.title(table, f"-> {out / summaries.SUMMARY}")
        log.info(summaries.render(table, heading))
    _log_totals(cfg, out, groups, programs, status, run_steps, time.perf_counter() - t0)
    return out


def _log_totals(cfg: Config, out: Path, groups: list[grid.Group], programs: engine.Programs,
                status: dict[int, str], run_steps: int, elapsed: float) -> None:
    """The compile and wall times; the last line (kept by --quiet) names the directory."""
    compile_s = programs.compile_wall()
    for group in groups:
        size = group.chunks[0].size
        keys = [("init", group.spec, size), ("interval", group.spec, size, cfg.sweep.vmap_size)]
        if any(k in programs.compile_seconds for k in keys):
            log.info(f"jaxsim: shape group {group.index} compiled in "
                     f"{programs.compile_wall(keys):.1f}s")
    diverged = [r for r, s in status.items() if s == "diverged"]
    host = dict(programs.host_seconds)
    log.info(f"jaxsim: host work between compiled calls: checkpoints "
             f"{host.get('checkpoints', 0):.1f}s, metrics and progress "
             f"{host.get('metrics', 0):.1f}s "
             f"({100 * sum(host.values()) / max(elapsed, 1e-9):.1f}% of the wall time)")
    logs.RESULT.info(f"jaxsim: done in {elapsed:.1f}s, {compile_s:.1f}s of it compiling; "
                     f"{run_steps / max(elapsed - compile_s, 1e-9):.1f} runs·steps/s after "
                     f"compile; {len(diverged)} diverged run(s)"
                     f"{': ' + str(diverged) if diverged else ''}; results in {out}")
