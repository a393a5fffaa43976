"""The process's caches of compiled programs, and letting them go.

Every compiled XLA CPU executable keeps its machine code in a few memory maps of its own until
it is freed, and Linux allows a process `vm.max_map_count` maps (65530 by default). One sweep
compiles a handful of programs, but a long Python session (a notebook that runs sweep after
sweep, a test worker that runs hundreds) keeps every program it ever compiled: JAX's jit caches
and jaxsim's own (`@program_cache` below) hold them. Past the limit the next compile or cache
write dies natively (an abort in LLVM, a segfault in serialize) with nothing said.

`clear()` drops every cached program (jaxsim's and JAX's; a program needed again is compiled
anew, or loaded from the persistent compilation cache). `relieve()` does so only when the
process holds more than RELIEVE_FRACTION of its allowed maps; `jaxsim.sweep/resume/analyze/
steer` call it on entry, so a long session never reaches the limit.
"""
from __future__ import annotations

import functools
import logging
import os

LOG = logging.getLogger(__name__)

RELIEVE_FRACTION = 0.5
_caches: list = []


def program_cache(maxsize: int | None = 64):
    """functools.lru_cache(maxsize), registered so that `clear()` empties it: for functions that
    return jitted or compiled programs (or what only they need)."""
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        _caches.append(cached)
        return cached
    return wrap


def clear() -> None:
    """Drop every compiled program this process caches (jaxsim's and JAX's)."""
    import jax
    for cached in _caches:
        cached.cache_clear()
    jax.clear_caches()


def map_usage() -> tuple[int, int] | None:
    """(memory maps this process holds, the most it may hold), or None where unknown (not
    Linux)."""
    try:
        with open(f"/proc/{os.getpid()}/maps", "rb") as f:
            used = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return None
    return used, limit


def relieve(fraction: float = RELIEVE_FRACTION) -> bool:
    """`clear()` if this process holds more than `fraction` of its allowed memory maps; True if
    it did."""
    usage = map_usage()
    if usage is None or usage[0] <= fraction * usage[1]:
        return False
    LOG.info(f"jaxsim: {usage[0]} of {usage[1]} memory maps in use; dropping cached programs")
    clear()
    return True
