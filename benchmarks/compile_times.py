"""Where a jaxsim command's compile time goes, per program: tracing, lowering to MLIR and the
XLA compile (or the persistent-cache load that replaces it), from JAX's own monitoring events.

    python benchmarks/compile_times.py [--json FILE] -- sweep configs/quickstart.yaml --out DIR
    python benchmarks/compile_times.py -- analyze results/quickstart

Runs the `jaxsim` command line in this process (so the JAX events are seen) and prints one JSON
object: the command's wall and CPU time inside Python, per program {calls, trace_s, lower_s,
compile_s, compile_cpu_s} (a program = a jitted function's name; JAX's small eager ops are
summed under their primitive's name) and the totals, sorted by compile time, plus the persistent
cache's hits and writes. compile_cpu_s is the process's CPU time (every thread) spent in XLA's
compile or cache load: on a machine shared with other jobs it moves far less than wall time.
`benchmarks/time_to_first_result.py` runs it in fresh processes.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
from jax._src import compiler as jax_compiler  # noqa: E402  (to time each compile's CPU)

EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
          "/jax/core/compile/backend_compile_duration": "compile_s"}
CACHE_EVENTS = {"/jax/compilation_cache/cache_hits": "cache_hits",
                "/jax/compilation_cache/cache_misses": "cache_writes",
                "/jax/compilation_cache/compile_requests_use_cache": "cache_requests"}


class CompileLog:
    """Collects JAX's compile-duration events by program name while it is registered."""

    def __init__(self) -> None:
        self.programs: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)
        self.cache: collections.Counter = collections.Counter()
        self._compile_cpu = 0.0   # CPU seconds of the compile that just finished

    def timed_compile(self, compile_fn):
        def wrapper(*args, **kwargs):
            c0 = time.process_time()
            try:
                return compile_fn(*args, **kwargs)
            finally:
                self._compile_cpu = time.process_time() - c0
        return wrapper

    def on_duration(self, event: str, seconds: float, **kwargs) -> None:
        if event in EVENTS:
            program = self.programs[str(kwargs.get("fun_name", "?"))]
            program[EVENTS[event]] += seconds
            if EVENTS[event] == "compile_s":
                program["calls"] += 1
                program["compile_cpu_s"] += self._compile_cpu
                self._compile_cpu = 0.0

    def on_event(self, event: str, **kwargs) -> None:
        if event in CACHE_EVENTS:
            self.cache[CACHE_EVENTS[event]] += 1

    def __enter__(self) -> "CompileLog":
        self._original = jax_compiler.compile_or_get_cached
        jax_compiler.compile_or_get_cached = self.timed_compile(self._original)
        jax.monitoring.register_event_duration_secs_listener(self.on_duration)
        jax.monitoring.register_event_listener(self.on_event)
        return self

    def __exit__(self, *exc) -> None:
        from jax._src import monitoring   # the public module has no unregister in every version
        jax_compiler.compile_or_get_cached = self._original
        monitoring.unregister_event_duration_listener(self.on_duration)
        monitoring.unregister_event_listener(self.on_event)

    def report(self) -> dict:
        rows = {name: {k: (round(v, 3) if k != "calls" else v) for k, v in c.items()}
                for name, c in sorted(self.programs.items(),
                                      key=lambda kv: -kv[1]["compile_s"])}
        totals = collections.Counter()
        for c in self.programs.values():
            totals.update(c)
        return {"programs": rows,
                "total": {k: (round(v, 3) if k != "calls" else v) for k, v in totals.items()},
                "persistent_cache": dict(self.cache)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the JSON here")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then jaxsim's arguments")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    from jaxsim import cli
    t0, c0 = time.perf_counter(), time.process_time()
    with CompileLog() as log:
        code = cli.main(command)
    report = {"command": command, "exit_code": code,
              "wall_s_in_python": round(time.perf_counter() - t0, 3),
              "cpu_s_in_python": round(time.process_time() - c0, 3),
              "load_average": os.getloadavg(), **log.report()}
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
