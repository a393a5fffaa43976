"""What moves the quickstart step on a CPU: XLA flags, devices, vmap and microbatch sizes.

    python benchmarks/cpu_tuning.py [--workload quickstart] [--runs 32] [--steps 20]
                                    [--variants baseline,microbatch4,...] [--out benchmarks/results]

Each variant runs `benchmarks/throughput.py --backends jaxsim` in a fresh process (XLA flags
and the device count must be set before jax starts) and reports its runs·steps/s and its ratio
to the first variant. Variants (name: settings):
  one_device             1 device (XLA threads each op over the cores), sweep.vmap_size 2
  baseline               one device per core, vmap_size 2 (the CLI's default on a CPU host)
  vmap0 / vmap1 / vmap4  one vmap over each device's runs / lax.map over single runs / over 4
  microbatchN            train.microbatch_size N (gradient passes of N sequences)
  no_ynn                 XLA's YNNPACK fusions off (--xla_cpu_experimental_ynn_fusion_type=)
  legacy_runtime         XLA's pre-thunk CPU runtime (--xla_cpu_use_thunk_runtime=false)
  fast_math              --xla_cpu_enable_fast_math=true (changes numerics: measured, not used)
  bf16_matmuls           jax_default_matmul_precision=bfloat16 (no effect on f32 CPU dots)
  a+b                    both settings, e.g. vmap4+microbatch2
Prints one JSON object and writes it under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORES = os.cpu_count() or 1


def _variant(name: str) -> dict:
    """name ("a+b" combines settings) -> {devices, vmap, microbatch, flags, env}."""
    v = {"devices": CORES, "vmap": 2, "microbatch": 0, "flags": "", "env": {}}
    for part in name.split("+"):
        _apply(v, part)
    return v


def _apply(v: dict, name: str) -> None:
    if name == "one_device":
        v["devices"] = 1
    elif name.startswith("vmap"):
        v["vmap"] = int(name[4:])
    elif name.startswith("microbatch"):
        v["microbatch"] = int(name[10:])
    elif name == "no_ynn":
        v["flags"] += " --xla_cpu_experimental_ynn_fusion_type="
    elif name == "legacy_runtime":
        v["flags"] += " --xla_cpu_use_thunk_runtime=false"
    elif name == "fast_math":
        v["flags"] += " --xla_cpu_enable_fast_math=true"
    elif name == "bf16_matmuls":
        v["env"] = {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"}
    elif name != "baseline":
        raise SystemExit(f"unknown variant {name!r}; see the docstring for the allowed ones")


def measure(workload: str, runs: int, steps: int, name: str) -> dict:
    v = _variant(name)
    flags = f"--xla_force_host_platform_device_count={v['devices']} {v['flags']}".strip()
    env = dict(os.environ, XLA_FLAGS=flags, **v["env"])
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(HERE / "throughput.py"), "--workload", workload,
                        "--runs", str(runs), "--steps", str(steps), "--backends", "jaxsim",
                        "--vmap-size", str(v["vmap"]), "--microbatch-size", str(v["microbatch"]),
                        "--repeats", "3", "--out", tmp],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (path,) = Path(tmp).glob("*.json")
        report = json.loads(path.read_text())
    (row,) = report["results"]
    return {"variant": name, **{k: v[k] for k in ("devices", "vmap", "microbatch", "flags")},
            "runs_steps_per_s": row["runs_steps_per_s"], "compile_s": row["compile_s"],
            "share_of_matmul_peak": row["share_of_matmul_peak"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="quickstart")
    p.add_argument("--runs", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--variants", default="baseline,one_device,vmap0,vmap1,vmap4,microbatch8,"
                   "microbatch4,microbatch2,no_ynn,legacy_runtime,fast_math,bf16_matmuls")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    rows = []
    for name in args.variants.split(","):
        rows.append(measure(args.workload, args.runs, args.steps, name))
        print(json.dumps(rows[-1]), file=sys.stderr)
    for r in rows:
        r["ratio_to_first"] = r["runs_steps_per_s"] / rows[0]["runs_steps_per_s"]
    result = {"workload": args.workload, "runs": args.runs, "steps_timed": args.steps,
              "cpu_count": CORES, "results": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"cpu_tuning_{args.workload}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
