"""Time to first result: a tiny sweep from a fresh process with a cold and a warm compilation
cache, against PyTorch eager training the same model one run at a time.

    python benchmarks/time_to_first_result.py [--repeats 3] [--torch-repeats 3]
                                              [--steps 1500] [--out benchmarks/results]

The sweep is issue 23's: configs/quickstart.yaml (8 runs: 4 task diversities x 2 seeds; a
2-layer d_model 32 GPT, 1500 AdamW steps, evaluation every 100) with a context of 32 and a batch
of 16, figures off. Each jaxsim measurement is `jaxsim sweep` in a fresh Python process (through
benchmarks/compile_times.py, which adds JAX's per-program compile times), timed from the
process's start to its exit: interpreter, imports, compiling or loading, training, evaluation,
checkpoints and results files. "cold": a new, empty cache directory; "warm": the same command
again with the directory the cold run filled (a new results directory each time). The PyTorch
side is benchmarks/torch_gpt.py's eager baseline (the same model, sampler and AdamW; runs one
after another, the data generated inside every step, no evaluation), timed in this process.
Every side is measured `--repeats` (torch: `--torch-repeats`) times and the fastest counts, as
a shared machine only ever slows a measurement down. Prints one JSON object and writes it to
--out/time_to_first_result.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "quickstart.yaml"
OVERRIDES = ["task.context_length=32", "train.batch_size=16", "sweep.plot=false"]
# the same shape for torch_gpt (its sampler draws from 64 chains per run; jaxsim's runs have
# 2 to 512: the cost of a Markov rollout does not depend on the bank size)
TORCH_SHAPE = dict(k=10, length=32, batch=16, layers=2, d=32, heads=4, d_mlp=128, chains=64)
DONE = re.compile(r"done in ([\d.]+)s, ([\d.]+)s of it compiling; ([\d.]+) runs·steps/s")


def jaxsim_run(cache: Path, out: Path, steps: int, extra: list[str]) -> dict:
    """`jaxsim sweep` in a fresh process with the cache directory `cache`; its wall time from
    start to exit, the sweep's own summary line and JAX's per-program compile times."""
    env = dict(os.environ, JAXSIM_CACHE_DIR=str(cache))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    report = out.with_suffix(".json")
    command = [sys.executable, str(HERE / "compile_times.py"), "--json", str(report), "--",
               "sweep", str(CONFIG), *OVERRIDES, f"train.steps={steps}", *extra,
               "--out", str(out), "--no-progress", "-q"]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"jaxsim sweep failed:\n{done.stderr[-3000:]}")
    summary = DONE.search(done.stderr)
    programs = json.loads(report.read_text())
    return {"wall_s": round(wall, 2),
            "sweep_done_in_s": float(summary.group(1)) if summary else None,
            "compile_s_logged": float(summary.group(2)) if summary else None,
            "runs_steps_per_s_after_compile": float(summary.group(3)) if summary else None,
            "compile_s": programs["total"].get("compile_s", 0.0),
            "compile_cpu_s": round(programs["total"].get("compile_cpu_s", 0.0), 3),
            "cpu_s_in_python": programs["cpu_s_in_python"],
            "trace_and_lower_s": round(programs["total"].get("trace_s", 0.0)
                                       + programs["total"].get("lower_s", 0.0), 3),
            "persistent_cache": programs["persistent_cache"],
            "programs": {name: p for name, p in programs["programs"].items() if "calls" in p}}


def torch_eager(steps: int, runs: int, repeats: int) -> dict:
    """Seconds for `steps` steps of each of `runs` models, one run after another (fastest of
    `repeats`), by torch_gpt's eager baseline."""
    sys.path.insert(0, str(HERE))
    import torch
    import torch_gpt
    torch.manual_seed(0)
    times = []
    for _ in range(repeats):
        models, sampler = torch_gpt.setup(TORCH_SHAPE, runs, "cpu")
        times.append(torch_gpt.train_sequential(models, sampler, steps))
    return {"seconds": round(min(times), 2), "all_seconds": [round(t, 2) for t in times],
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def best(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: r["wall_s"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="cold and warm jaxsim runs each")
    p.add_argument("--torch-repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a further override of the jaxsim sweep (repeatable), e.g. "
                        "train.microbatch_size=0; the torch side is unchanged")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    cold, warm = [], []
    with tempfile.TemporaryDirectory(prefix="jaxsim-ttfr-") as tmp:
        for i in range(args.repeats):
            cache = Path(tmp) / f"cache_{i}"          # empty: every program compiles
            cold.append(jaxsim_run(cache, Path(tmp) / f"cold_{i}", args.steps, args.override))
            warm.append(jaxsim_run(cache, Path(tmp) / f"warm_{i}", args.steps, args.override))
            entries = list(cache.glob("*-cache"))
            cold[-1]["cache_entries"] = len(entries)
            cold[-1]["cache_bytes"] = sum(e.stat().st_size for e in entries)
            print(json.dumps({"repeat": i, "cold_wall_s": cold[-1]["wall_s"],
                              "warm_wall_s": warm[-1]["wall_s"]}), file=sys.stderr)
    runs = 8   # the quickstart grid: 4 task diversities x 2 seeds
    report = {"workload": {"config": "configs/quickstart.yaml",
                           "overrides": OVERRIDES + args.override,
                           "runs": runs, "steps": args.steps},
              "repeats": args.repeats, "cold": best(cold), "warm": best(warm),
              "cold_wall_s_all": [r["wall_s"] for r in cold],
              "warm_wall_s_all": [r["wall_s"] for r in warm],
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "load_average_at_end": os.getloadavg()}
    if not args.skip_torch:
        torch_side = torch_eager(args.steps, runs, args.torch_repeats)
        report["torch_eager"] = torch_side
        report["speedup_vs_torch_eager"] = {
            "cold": round(torch_side["seconds"] / report["cold"]["wall_s"], 2),
            "warm": round(torch_side["seconds"] / report["warm"]["wall_s"], 2)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "time_to_first_result.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
