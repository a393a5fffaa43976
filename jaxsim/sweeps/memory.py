"""Chunk sizes from a memory budget: compile, read XLA's memory analysis, split until it fits.

`sweep.memory_budget` is the device memory one chunk's compiled program may use, per device:
"auto" (half of the device's memory; on a CPU, half of the host's RAM), a number of GiB, a share
such as "25%", or "none" (no limit). For each shape group the planner compiles the interval
program at the requested chunk size (the compile the sweep needs anyway when it fits) and reads
its peak from `compiled.memory_analysis()`: arguments + outputs - donated aliases + temporaries.
Over the budget, the per-run cost measured at that size gives a smaller chunk, compiled and
checked in turn. A sweep of any number of runs then takes more chunks instead of running out of
memory; one run per device that does not fit is a clear `ConfigError`.
"""
from __future__ import annotations

import os
import re

import jax

from jaxsim.config import ConfigError, Spec
from jaxsim.grid import Chunk, Run, round_to_devices
from jaxsim.sweeps import engine

AUTO_SHARE = 0.5
_GIB = 2 ** 30


def device_memory() -> int:
    """Bytes of memory of one device (host RAM when the device reports none, as CPUs do)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def budget_bytes(value) -> int | None:
    """`sweep.memory_budget` in bytes per device; None = no limit."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * _GIB)
    text = str(value).strip().lower()
    if text == "none":
        return None
    if text == "auto":
        return int(AUTO_SHARE * device_memory())
    share = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if share:
        return int(float(share.group(1)) / 100 * device_memory())
    raise ConfigError(f"sweep.memory_budget must be 'auto', 'none', a number of GiB or a share "
                      f"like '25%', got {value!r}")


def program_bytes(compiled) -> int:
    """Peak bytes of a compiled program per device: its buffers live at once, donated inputs
    counted once."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)


def human(num_bytes: float) -> str:
    for unit, size in (("GiB", _GIB), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if num_bytes >= size:
            return f"{num_bytes / size:.3g} {unit}"
    return f"{num_bytes:.0f} B"


def measure(programs: engine.Programs, spec: Spec, runs: list[Run], size: int,
             vmap_size: int) -> int:
    """Compile the interval program for a chunk of `size` runs (kept by `programs` for
    training, with the init program of that size, compiled alongside)."""
    chunk = Chunk(0, runs[:size], size)
    seeds, hparams = engine.chunk_inputs(spec, chunk)
    state = engine.abstract_chunk(spec, seeds, hparams, {})["state"]
    return program_bytes(programs.compile_chunk(spec, state, seeds, hparams, vmap_size))


def fit_chunk_size(programs: engine.Programs, spec: Spec, runs: list[Run], requested: int,
                   num_devices: int, budget, vmap_size: int = 0, where: str = ""
                   ) -> tuple[int, int]:
    """The largest chunk size <= `requested` (a multiple of the device count) whose compiled
    program fits `budget`; returns (size, its peak bytes per device)."""
    limit = budget_bytes(budget)
    size = round_to_devices(min(requested, len(runs)), num_devices)
    peak = measure(programs, spec, runs, size, vmap_size)
    while limit is not None and peak > limit:
        if size <= num_devices:
            raise ConfigError(f"sweep.memory_budget ({human(limit)} per device) is below what "
                              f"{where}needs for one run per device ({human(peak)}); raise it "
                              f"or shrink the model or batch")
        per_run = peak / size
        smaller = int(limit / per_run) // num_devices * num_devices
        size = max(num_devices, min(smaller, size - num_devices))
        peak = measure(programs, spec, runs, size, vmap_size)
    return size, peak
