"""Time to first result: a tiny sweep from a fresh process with a cold and a warm compilation
cache, against PyTorch eager training the same model one run at a time.

    python benchmarks/time_to_first_result.py [--repeats 3] [--torch-repeats 3]
                                              [--steps 1500] [--out benchmarks/results]
                                              [--torch-runs R --torch-steps S]
                                              [--torch-threads T] [--override KEY=VALUE]

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
a shared machine only ever slows a measurement down. `--torch-runs/--torch-steps` time fewer
eager steps and scale them to 8 runs x `--steps` (an eager step costs the same at every step
and run). Prints one JSON object (each jaxsim pair also as it finishes, on stderr) and writes it
to --out/time_to_first_result.json.
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


def torch_eager(steps: int, runs: int, repeats: int, measured_steps: int | None = None,
                measured_runs: int | None = None, threads: int | None = None) -> dict:
    """Seconds for `steps` steps of each of `runs` models, one run after another (fastest of
    `repeats`), by torch_gpt's eager baseline. With `measured_steps`/`measured_runs`, that many
    are timed and the time scaled to steps x runs: an eager step costs the same every step and
    every run (no compile; torch_gpt's two warm-up steps per run are untimed either way)."""
    sys.path.insert(0, str(HERE))
    import torch
    import torch_gpt
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    measured_steps, measured_runs = measured_steps or steps, measured_runs or runs
    scale = steps * runs / (measured_steps * measured_runs)
    times = []
    for _ in range(repeats):
        models, sampler = torch_gpt.setup(TORCH_SHAPE, measured_runs, "cpu")
        times.append(torch_gpt.train_sequential(models, sampler, measured_steps) * scale)
    return {"seconds": round(min(times), 2), "all_seconds": [round(t, 2) for t in times],
            "measured_runs": measured_runs, "measured_steps": measured_steps,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def best(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: r["wall_s"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="cold and warm jaxsim runs each")
    p.add_argument("--torch-repeats", type=int, default=3)
    p.add_argument("--torch-runs", type=int, help="runs torch times (default: all 8), scaled")
    p.add_argument("--torch-steps", type=int, help="steps torch times per run (default: all), "
                   "scaled to the sweep's steps")
    p.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's; "
                   "on a machine shared with other jobs 1 avoids OpenMP's spin-waits, which "
                   "made 2 threads 7x slower than 1 here)")
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
            print(json.dumps({"repeat": i, "cold": cold[-1], "warm": warm[-1]}),
                  file=sys.stderr, flush=True)   # kept if the torch side is cut short
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
        torch_side = torch_eager(args.steps, runs, args.torch_repeats, args.torch_steps,
                                 args.torch_runs, args.torch_threads)
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
