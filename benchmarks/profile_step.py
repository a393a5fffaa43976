"""Where a training step's time goes on this machine: an XLA profile of jaxsim's step.

    python benchmarks/profile_step.py [--workload quickstart] [--runs 2] [--steps 20]
                                      [--microbatch-size 0] [--top 25] [--out benchmarks/results]

Compiles the same program `benchmarks/throughput.py` times (`train_step` under `lax.scan`,
vmapped over `--runs` runs, on one device), traces three calls with `jax.profiler`, and joins
the trace's per-op events with the compiled HLO (shape, op metadata). Reports ms per step by op
kind, by what the op computes — attention tensors ([.., T, T] outputs: scores, softmax and their
gradients), matmuls (`dot` and XNNPACK/YNNPACK fusions holding one) and the rest — and the top
ops (op times are from the traced calls, which run slower than untraced ones; the untraced
wall time per step is reported too). Set XLA_FLAGS (e.g. `--xla_cpu_multi_thread_eigen=false` under `taskset -c 0` for one core)
before running to profile other settings. Prints one JSON object and writes it under --out.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import throughput  # noqa: E402
from jaxsim import config, testbeds, training  # noqa: E402
from jaxsim.training import loop  # noqa: E402

OP = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\(")


def hlo_ops(text: str) -> dict:
    """op name -> (output shape, HLO kind, metadata op_name, calls a dot)."""
    bodies, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and "{" in line:
            current = line.split()[0].lstrip("%")
            bodies[current] = []
        elif current:
            bodies[current].append(line)
    ops = {}
    for line in text.splitlines():
        m = OP.match(line)
        if not m:
            continue
        meta = re.search(r'op_name="([^"]+)"', line)
        calls = re.search(r"calls=%([\w.\-]+)", line)
        has_dot = m.group(3) == "dot" or bool(
            calls and any(" dot(" in b for b in bodies.get(calls.group(1), [])))
        ops[m.group(1)] = (m.group(2), m.group(3), meta.group(1) if meta else "", has_dot)
    return ops


def category(shape: str, has_dot: bool, length: int) -> str:
    dims = re.findall(r"\d+", shape.split("{")[0])
    if len(dims) >= 2 and dims[-1] == dims[-2] == str(length):
        return "attention [T, T] tensors" + (" (matmul)" if has_dot else "")
    return "matmul" if has_dot else "other"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="quickstart", choices=["quickstart", "d64"])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--microbatch-size", type=int, default=0)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    w = throughput.WORKLOADS[args.workload]
    cfg = throughput.jaxsim_config(w, args.steps, "gpt", args.microbatch_size)
    spec = config.spec_of(cfg)
    hp = training.as_arrays(config.hparams_of(cfg))
    hps = jax.tree.map(lambda x: jnp.broadcast_to(x, (args.runs,)), hp)
    seeds = jnp.arange(args.runs, dtype=jnp.int32)
    task = testbeds.get(spec.task.name)

    def one(seed, h):
        key = jax.random.key(seed)
        consts = task.constants(key, spec, h)
        return jax.lax.scan(lambda s, _: training.train_step(s, consts, key, spec, h),
                            loop.init(key, spec, h), None, length=args.steps)[1]

    fn = jax.jit(jax.vmap(one))
    ops = hlo_ops(fn.lower(seeds, hps).compile().as_text())
    jax.block_until_ready(fn(seeds, hps))
    untraced = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(seeds, hps))
        untraced.append(time.perf_counter() - t0)
    calls = 3
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(fn(seeds, hps))
        (path,) = glob.glob(f"{tmp}/**/*perfetto_trace.json.gz", recursive=True)
        trace = json.load(gzip.open(path))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in ops:
            per_op[e["name"]] += e.get("dur", 0) / 1e3   # ms
    steps = calls * args.steps
    length = w["length"] - 1
    by_kind, by_category = collections.Counter(), collections.Counter()
    for name, ms in per_op.items():
        shape, kind, _, has_dot = ops[name]
        by_kind[f"{kind}:{re.sub(r'[.0-9]+$', '', name)}"] += ms / steps
        by_category[category(shape, has_dot, length)] += ms / steps
    total = sum(per_op.values()) / steps
    top = [{"op": n, "ms_per_step": round(ms / steps, 4), "shape": ops[n][0],
            "kind": ops[n][1], "source": ops[n][2][-90:]}
           for n, ms in per_op.most_common(args.top)]
    result = {"workload": args.workload, "runs": args.runs, "microbatch_size":
              args.microbatch_size, "devices": jax.device_count(),
              "ms_per_step_in_ops": round(total, 3),
              "ms_per_step_wall_untraced": round(min(untraced) / args.steps * 1e3, 3),
              "by_category": {k: round(v, 3) for k, v in by_category.most_common()},
              "by_kind": {k: round(v, 3) for k, v in by_kind.most_common(15)},
              "top_ops": top, "jax": jax.__version__, "numpy": np.__version__}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"profile_{args.workload}_R{args.runs}_mb{args.microbatch_size}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
