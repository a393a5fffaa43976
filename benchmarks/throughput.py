"""Training throughput: jaxsim's sweep path vs PyTorch, same model, task, optimiser and batch.

    python benchmarks/throughput.py [--workload quickstart|d64|mc_encoder|sae_topk|unet_cpu]
                                    [--runs 1,8,64] [--steps 20] [--vmap-size 0]
                                    [--microbatch-size 0] [--repeats 3] [--dtype float32]
                                    [--backends jaxsim,torch_eager,torch_func,torch_compile]
                                    [--out benchmarks/results]

Workloads: `quickstart` and `d64`, a GPT on markov_mixture (torch twin: torch_gpt.py);
`mc_encoder`, the BERT-style encoder on matrix_completion at CPU size (torch_encoder.py);
`sae_topk`, a TopK SAE on concept_geometry subspaces (torch_sae.py; AuxK on both sides, no
Multi-TopK term on either: its weight is 0, and a group whose largest weight is 0 skips it);
`unet_cpu`, the conditional diffusion U-Net with the DDPM ε-objective on random 16 x 16 images
and conditions (its jaxsim side and FLOP count: unet_workload.py; torch twin: torch_unet.py).

Prints one JSON object (and writes it, with a plot, under --out). Every side includes data
generation in the timed step (Markov rollouts from each run's chain bank; fresh low-rank
matrices; points from each run's concept subspaces) and excludes periodic evaluation and
per-run constants (chain banks, subspace bases). jaxsim's side is the sweep's own code:
`training.train_step` (`loop.train_step`, or `sae_loop.train_step` for an SAE) under
`lax.scan`, vmapped over runs, jitted with the run axis sharded over all devices — the same
functions the sweep engine compiles, without the evaluation at the end of each interval.

Every backend is timed `--repeats` times after a warm-up (torch.compile once) and the fastest
call counts. Reported per backend and run count R: runs·steps/s, tokens/s (SAE: input vectors/s), achieved
FLOP/s and its share of the matmul peak measured in the same invocation, compile time (jaxsim),
peak memory, and the ratio jaxsim / backend. FLOPs per step come from one analytic count
(matmuls and attention, forward + backward = 3x forward) applied to both sides, checked against
torch's FlopCounterMode on one step of the PyTorch twin (`flops_check`); both sides' parameter
counts are printed and must agree.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import resource
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxsim import config, training  # noqa: E402
import unet_workload  # noqa: E402

WORKLOADS = {
    # the quickstart model and task
    "quickstart": dict(k=10, length=64, batch=32, layers=2, d=32, heads=4, d_mlp=128, chains=64),
    # the paper's width at a CPU-sized context and batch
    "d64": dict(k=10, length=64, batch=32, layers=2, d=64, heads=4, d_mlp=256, chains=64),
    # configs/matrix_completion.yaml's model and task (no warm-up: it is a scale of the update)
    "mc_encoder": dict(n=4, rank=1, mask_prob=0.3, batch=256, layers=2, d=32, heads=4, d_mlp=128,
                       lr=2e-3, beta1=0.9, beta2=0.999, weight_decay=0.0),
    # a TopK SAE, 8x expansion, on configs/sae_geometry.yaml's data
    "sae_topk": dict(d=64, expansion=8, k=8, batch=1024, concepts=8, max_concept_dim=8,
                     offset=4.0, noise=0.05, auxk_coef=1 / 32, dead_steps=1000,
                     lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0),
    # the conditional U-Net of concept_images at the CPU shape (unet_workload.UNET_CPU)
    "unet_cpu": unet_workload.UNET_CPU,
}


def transformer_flops(tokens: int, t: int, w: dict, out_dim: int) -> float:
    """Training FLOPs of one step: 3 x forward (block matmuls, attention scores/values over all
    t x t pairs, the read-out to `out_dim`), for `tokens` positions of sequences of length t."""
    d = w["d"]
    per_layer = 2 * (4 * d * d + 2 * d * w["d_mlp"]) + 2 * 2 * t * d
    return 3.0 * tokens * (w["layers"] * per_layer + 2 * d * out_dim)


def gpt_flops(w: dict) -> float:
    return transformer_flops(gpt_tokens(w), w["length"] - 1, w, w["k"])


def encoder_flops(w: dict) -> float:
    return transformer_flops(encoder_tokens(w), w["n"] ** 2, w, 1)


def sae_flops(w: dict) -> float:
    """3 x forward of the encoder, the decoder and AuxK's decoder (each 2 B D F; dense)."""
    return 3.0 * 3 * 2 * w["batch"] * w["d"] * w["d"] * w["expansion"]


def gpt_tokens(w: dict) -> int:
    return w["batch"] * (w["length"] - 1)


def encoder_tokens(w: dict) -> int:
    return w["batch"] * w["n"] ** 2


def sae_tokens(w: dict) -> int:
    return w["batch"]


def gpt_config(w: dict) -> dict:
    return {"task": {"num_states": w["k"], "num_chains": w["chains"],
                     "context_length": w["length"]},
            "model": {"num_layers": w["layers"], "d_model": w["d"], "num_heads": w["heads"],
                      "d_mlp": w["d_mlp"]},
            "train": {"lr": 1e-3}}


def _adam(w: dict) -> dict:
    return {"lr": w["lr"], "beta1": w["beta1"], "beta2": w["beta2"],
            "weight_decay": w["weight_decay"], "grad_clip": 0.0, "warmup_steps": 0}


def encoder_config(w: dict) -> dict:
    return {"task": {"name": "matrix_completion", "matrix_size": w["n"], "rank": w["rank"],
                     "mask_prob": w["mask_prob"], "factor_dist": "uniform", "factor_scale": 1.0},
            "model": {"name": "encoder", "num_layers": w["layers"], "d_model": w["d"],
                      "num_heads": w["heads"], "d_mlp": w["d_mlp"], "norm": "pre",
                      "input": "continuous"},
            "train": _adam(w)}


def sae_config(w: dict) -> dict:
    return {"task": {"name": "concept_geometry", "geometry": "subspaces", "dim": w["d"],
                     "num_concepts": w["concepts"], "max_concept_dim": w["max_concept_dim"],
                     "concept_offset": w["offset"], "noise_std": w["noise"]},
            "model": {"name": "sae", "kind": "topk", "d_sae": w["d"] * w["expansion"],
                      "k": w["k"], "auxk_coef": w["auxk_coef"], "multi_topk_coef": 0.0,
                      "dead_steps": w["dead_steps"], "b_dec_init": "median"},
            "train": _adam(w)}


class Family(NamedTuple):
    """What a workload family brings: its jaxsim config, analytic FLOPs and tokens per run-step,
    its PyTorch twin's module, and what the timed step holds besides training."""
    config: Callable[[dict], dict]
    flops: Callable[[dict], float]
    tokens: Callable[[dict], int]
    torch_module: str
    data: str


FAMILIES = {
    "gpt": Family(gpt_config, gpt_flops, gpt_tokens, "torch_gpt",
                  "generated in every timed step on both sides (Markov rollouts)"),
    "encoder": Family(encoder_config, encoder_flops, encoder_tokens, "torch_encoder",
                      "generated in every timed step on both sides (U V^T, Bernoulli mask)"),
    "sae": Family(sae_config, sae_flops, sae_tokens, "torch_sae",
                  "generated in every timed step on both sides (points from each run's "
                  "subspaces; tokens = input vectors); AuxK on both sides; no Multi-TopK term"),
    "unet": Family(unet_workload.model_config, unet_workload.unet_flops,
                   unet_workload.unet_tokens, "torch_unet",
                   "random images in [-1, 1] and conditions drawn in every timed step on both "
                   "sides, DDPM-corrupted (tokens = images); not the concept_images renderer"),
}
FAMILY_OF = {"quickstart": "gpt", "d64": "gpt", "mc_encoder": "encoder", "sae_topk": "sae",
             "unet_cpu": "unet"}


def flops_per_step(w: dict, family: str = "gpt") -> float:
    """Analytic training FLOPs of one run's step."""
    return FAMILIES[family].flops(w)


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Measured matmul FLOP/s of the default jax device in `dtype`."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    out.block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def jaxsim_config(w: dict, steps: int, family: str = "gpt", microbatch_size: int = 0,
                  dtype: str = "float32") -> config.Config:
    raw = FAMILIES[family].config(w)
    if dtype != "float32":
        raw["model"]["compute_dtype"] = dtype
    raw["train"].update(steps=steps, batch_size=w["batch"], eval_every=steps,
                        microbatch_size=microbatch_size)
    return config.from_dict(raw)


def bench_jaxsim(w: dict, runs: int, steps: int, vmap_size: int = 0, family: str = "gpt",
                 microbatch_size: int = 0, repeats: int = 1, dtype: str = "float32") -> dict:
    from jaxsim.sweeps import engine
    from jaxsim import testbeds

    if family == "unet":    # random data: its own program (unet_workload.py)
        return unet_workload.bench_jaxsim(w, runs, steps, vmap_size, repeats)
    cfg = jaxsim_config(w, steps, family, microbatch_size, dtype)
    spec = config.spec_of(cfg)
    sharding = engine.run_sharding()
    size = -(-runs // jax.device_count()) * jax.device_count()
    seeds = jax.device_put(np.arange(size, dtype=np.int32), sharding)
    hp = training.as_arrays(config.hparams_of(cfg))
    hparams = jax.device_put(jax.tree.map(lambda x: jnp.broadcast_to(x, (size,)), hp), sharding)
    task = testbeds.get(spec.task.name)

    def run_steps(args):
        state, seed, hparams = args
        key = jax.random.key(seed)
        consts = task.constants(key, spec, hparams)
        return jax.lax.scan(lambda s, _: training.train_step(s, consts, key, spec, hparams),
                            state, None, length=steps)

    state = engine.Programs().init_chunk(spec, seeds, hparams)
    fn = jax.jit(lambda *a: engine.over_runs(run_steps, a, vmap_size), donate_argnums=0,
                 out_shardings=sharding)
    t0 = time.perf_counter()
    compiled = fn.lower(state, seeds, hparams).compile()
    compile_s = time.perf_counter() - t0
    state, losses = compiled(state, seeds, hparams)  # warm-up
    losses.block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, losses = compiled(state, seeds, hparams)
        losses.block_until_ready()
        times.append(time.perf_counter() - t0)
    seconds = min(times)
    params = jax.tree.map(lambda a: a[0], state["params"])
    return {"seconds": seconds, "compile_s": compile_s, "finite": bool(np.isfinite(losses).all()),
            "param_count": int(sum(x.size for x in jax.tree.leaves(params))), "padded_runs": size}


def bench_torch(w: dict, runs: int, steps: int, variant: str, device: str,
                family: str = "gpt", repeats: int = 1, dtype: str = "float32") -> dict:
    import torch
    import torch_common

    twin = importlib.import_module(FAMILIES[family].torch_module)
    twin.AUTOCAST = torch.bfloat16 if dtype == "bfloat16" else None
    torch.manual_seed(0)
    models, data = twin.setup(w, runs, device, fused=variant != "torch_func")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if variant == "torch_compile":   # compiles per model: timed once
        seconds = twin.train_sequential(models, data, steps, compile_=True)
    elif variant == "torch_func":
        seconds = min(twin.train_ensemble(models, data, steps) for _ in range(repeats))
    else:
        seconds = min(twin.train_sequential(models, data, steps) for _ in range(repeats))
    out = {"seconds": seconds, "param_count": torch_common.param_count(models[0])}
    if device == "cuda":
        out["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def check_flops(w: dict, family: str, analytic: float, tolerance: float = 1e-6) -> dict:
    """The analytic count against torch's FlopCounterMode on one training step of the PyTorch
    twin (R = 1, unfused attention: the counter does not see the fused CPU kernel); exits if
    they differ by more than `tolerance` (relative)."""
    import torch

    twin = importlib.import_module(FAMILIES[family].torch_module)
    torch.manual_seed(0)
    models, data = twin.setup(w, 1, "cpu", fused=False)
    counted = twin.step_flops(models[0], data)
    if abs(counted - analytic) > tolerance * analytic:
        raise SystemExit(f"analytic FLOPs {analytic:.6g} != torch FlopCounterMode {counted:.6g}")
    return {"analytic": analytic, "torch_flop_counter": counted}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=list(WORKLOADS), default="quickstart",
                   help="quickstart, d64: GPT on markov_mixture; mc_encoder: encoder on "
                        "matrix_completion; sae_topk: TopK SAE on concept_geometry; "
                        "unet_cpu: diffusion U-Net on random images")
    p.add_argument("--runs", default="1,8,64")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--backends", default="jaxsim,torch_eager,torch_func,torch_compile")
    p.add_argument("--compile-max-runs", type=int, default=1,
                   help="largest R for torch_compile (it compiles once per model)")
    p.add_argument("--sequential-max-runs", type=int, default=256,
                   help="largest R for torch_eager (runs one after another: time grows with R)")
    p.add_argument("--vmap-size", type=int, default=0,
                   help="jaxsim's sweep.vmap_size (0 = one vmap over all runs)")
    p.add_argument("--microbatch-size", type=int, default=0,
                   help="jaxsim's train.microbatch_size (0 = the whole batch in one pass)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="gpt workloads: jaxsim's model.compute_dtype and torch autocast (mixed "
                        "precision: parameters and optimizer state stay float32); the matmul "
                        "peak is measured in the same dtype")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed calls per backend and R (after a warm-up); the fastest counts")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    w, family = WORKLOADS[args.workload], FAMILY_OF[args.workload]
    if args.dtype != "float32" and family != "gpt":
        p.error(f"--dtype {args.dtype} applies to the gpt workloads (quickstart, d64)")
    backends = args.backends.split(",")
    device = jax.devices()[0].platform
    torch_device = "cuda" if device == "gpu" else "cpu"
    flops = flops_per_step(w, family)
    flops_check = check_flops(w, family, flops)
    tokens = FAMILIES[family].tokens(w)
    peak = matmul_peak(dtype=args.dtype)
    rows = []
    for runs in [int(r) for r in args.runs.split(",")]:
        for backend in backends:
            if backend == "torch_compile" and runs > args.compile_max_runs:
                continue
            if backend == "torch_eager" and runs > args.sequential_max_runs:
                continue
            if backend == "jaxsim":
                res = bench_jaxsim(w, runs, args.steps, args.vmap_size, family,
                                   args.microbatch_size, args.repeats, args.dtype)
            else:
                res = bench_torch(w, runs, args.steps, backend, torch_device, family,
                                  args.repeats, args.dtype)
            rate = runs * args.steps / res["seconds"]
            res.update(backend=backend, runs=runs, runs_steps_per_s=rate, tokens_per_s=rate * tokens,
                       flop_per_s=rate * flops, share_of_matmul_peak=rate * flops / peak)
            rows.append(res)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                              for k, v in res.items()}), file=sys.stderr)
    for row in rows:
        ref = next((r for r in rows if r["backend"] == "jaxsim" and r["runs"] == row["runs"]), None)
        if ref is not None:
            row["jaxsim_speedup"] = ref["runs_steps_per_s"] / row["runs_steps_per_s"]
    counts = {r["backend"]: r["param_count"] for r in rows}
    if len(set(counts.values())) > 1:
        raise SystemExit(f"parameter counts differ between backends: {counts}")
    report = {"workload": args.workload, "family": family, "shape": w,
              "steps_timed": args.steps, "vmap_size": args.vmap_size,
              "microbatch_size": args.microbatch_size, "repeats": args.repeats,
              "dtype": args.dtype,
              "data": FAMILIES[family].data, "flops_per_run_step": flops,
              "flops_check": flops_check, "param_count": counts, "matmul_peak_flop_per_s": peak,
              "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
              "cpu": platform.processor() or platform.machine(), "devices": jax.device_count(),
              "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "results": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"throughput_{args.workload}_{device}_vmap{args.vmap_size}"
    if args.microbatch_size:
        stem += f"_mb{args.microbatch_size}"
    if args.dtype != "float32":
        stem += f"_{args.dtype}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    _plot(report, out / f"{stem}.png")
    print(json.dumps(report))
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for backend in dict.fromkeys(r["backend"] for r in report["results"]):
        rs = [r for r in report["results"] if r["backend"] == backend]
        ax.plot([r["runs"] for r in rs], [r["runs_steps_per_s"] for r in rs], "o-", label=backend)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("runs R")
    ax.set_ylabel("runs·steps / s")
    ax.set_title(f"{report['workload']} on {report['device']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
