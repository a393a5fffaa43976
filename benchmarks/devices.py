"""Scaling of the sweep path with the number of devices: 1 vs N forced host (CPU) devices.

    python benchmarks/devices.py [--workload quickstart] [--runs 8,64] [--steps 20]
                                 [--devices 1,2] [--vmap-size 0] [--microbatch-size 0]
                                 [--out benchmarks/results]

Runs `benchmarks/throughput.py --backends jaxsim` once per device count, each in a fresh process
with `XLA_FLAGS=--xla_force_host_platform_device_count=D` (the flag must be set before jax
starts), so the same code path that shards the run axis over GPUs is measured on one host: the
run axis is split over D devices with a NamedSharding, each device a partition of the CPU.
Prints one JSON object (runs·steps/s per device count and run count, and the speed-up over one
device) and writes it under --out.
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


def measure(workload: str, runs: str, steps: int, devices: int, vmap_size: int,
            microbatch_size: int = 0) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(HERE / "throughput.py"), "--workload", workload,
                        "--runs", runs, "--steps", str(steps), "--backends", "jaxsim",
                        "--vmap-size", str(vmap_size), "--microbatch-size", str(microbatch_size),
                        "--out", tmp],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        (path,) = Path(tmp).glob("*.json")
        return json.loads(path.read_text())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="quickstart")
    p.add_argument("--runs", default="8,64")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--devices", default="1,2")
    p.add_argument("--vmap-size", type=int, default=0)
    p.add_argument("--microbatch-size", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    rows = []
    for d in (int(x) for x in args.devices.split(",")):
        report = measure(args.workload, args.runs, args.steps, d, args.vmap_size,
                         args.microbatch_size)
        assert report["devices"] == d, report["devices"]
        for r in report["results"]:
            rows.append({"devices": d, "runs": r["runs"], "runs_steps_per_s": r["runs_steps_per_s"],
                         "compile_s": r["compile_s"],
                         "share_of_matmul_peak": r["share_of_matmul_peak"]})
    base = {r["runs"]: r["runs_steps_per_s"] for r in rows if r["devices"] == rows[0]["devices"]}
    for r in rows:
        r["speedup_over_first"] = r["runs_steps_per_s"] / base[r["runs"]]
    result = {"workload": args.workload, "steps_timed": args.steps, "vmap_size": args.vmap_size,
              "microbatch_size": args.microbatch_size,
              "cpu_count": os.cpu_count(), "results": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"devices_{args.workload}_vmap{args.vmap_size}.json").write_text(
        json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
