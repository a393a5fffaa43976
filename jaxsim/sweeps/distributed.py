"""Multi-host sweeps: one sweep whose run axis is sharded over the devices of several processes
(hosts), through `jax.distributed.initialize`.

Every process runs the same command (`jaxsim sweep CONFIG --out DIR --distributed ...`) against
the same DIR on a shared filesystem. The engine needs nothing new: `jax.devices()` is then the
global device list, so `engine.run_sharding()`'s mesh and every chunk span all hosts; orbax
writes each process's shards of a checkpoint; metrics rows are gathered to every process, and
only process 0 writes the plain files (config.yaml, runs.csv, metrics.npz, figures).

Use it when one chunk must span hosts (a run axis too large for one host's memory, or one
compile over every host's devices); independent slices of a sweep are simpler as shards
(`--shard I/N`, `jaxsim merge`).
"""
from __future__ import annotations

import jax

from jaxsim.config import ConfigError


def parse(text: str) -> dict:
    """'auto' -> {} (cluster auto-detection: Slurm, Open MPI, ...); 'HOST:PORT,N,I' ->
    coordinator_address, num_processes, process_id."""
    if text == "auto":
        return {}
    parts = [p.strip() for p in text.split(",")]
    try:
        address, count, index = parts
        count, index = int(count), int(index)
        if ":" not in address or not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--distributed takes 'auto' or HOST:PORT,NUM_PROCESSES,PROCESS_ID "
                          f"(e.g. 10.0.0.1:1234,2,0), got {text!r}") from None
    return {"coordinator_address": address, "num_processes": count, "process_id": index}


def initialize(text: str) -> None:
    """Join the multi-process group before any device is touched. CPU processes talk through
    gloo (jaxlib's CPU collectives); GPUs/TPUs use their own, the setting is ignored there."""
    kwargs = parse(text)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--distributed {text}: jax.distributed.initialize failed: "
                          f"{first}") from None


def is_writer() -> bool:
    """Whether this process writes the plain result files (process 0 of a multi-host sweep)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """All processes wait here (no-op in a single-process sweep)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def to_host(tree):
    """device_get that also works on arrays sharded over other processes' devices."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)
