"""The diffusion workload of throughput.py: a conditional U-Net (`model.name: unet`) trained
with the DDPM ε-objective, R runs vmapped — its jaxsim side and its analytic FLOP count.

Until the concept_images testbed is in the sweep path here, both sides train on random images
in [-1, 1] and random condition vectors of the workload's shapes, drawn inside every timed step
(jaxsim: from fold_in(run key, step)), then corrupted at uniform timesteps. The jaxsim side is
`diffusion.denoising_loss` (the U-Net jaxsim builds, `models.build`) and jaxsim's own optimiser
(`training.loop.optimizer`: global-norm clip + AdamW, per-run hyperparameters), scanned over
steps and vmapped over runs (`engine.over_runs`, so `--vmap-size` works as for the sweeps).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsim.config import ModelConfig
from jaxsim.sweeps import engine
from jaxsim.testbeds.concept_images import diffusion
from jaxsim.training import loop

# a CPU-sized shape: 16 x 16 images, two levels, batch 32 (see docs/testbeds/concept_images.md)
UNET_CPU = dict(res=16, channels=(16, 32), blocks=1, attention=False, time_dim=64, cond=4,
                batch=32, timesteps=1000, beta_start=1e-4, beta_end=0.02, lr=1e-3, beta1=0.9,
                beta2=0.999, weight_decay=0.0, grad_clip=1.0)


def model_config(w: dict) -> ModelConfig:
    return ModelConfig(name="unet", channels=tuple(w["channels"]), blocks_per_level=w["blocks"],
                       attention=w["attention"], time_dim=w["time_dim"],
                       timesteps=w["timesteps"], beta_start=w["beta_start"],
                       beta_end=w["beta_end"])


def unet_flops(w: dict) -> float:
    """Training FLOPs of one step: convs (2 B H W k² C_in C_out), dense layers and attention's
    two matmuls, 3 x forward — except the layers whose input needs no gradient (the input conv
    and the first Dense of the time and condition MLPs), which count 2 x forward (no input
    gradient). Norms, activations, resizes and the loss are not counted (as FlopCounterMode)."""
    b, side, d, ch, nb = w["batch"], w["res"], w["time_dim"], tuple(w["channels"]), w["blocks"]
    conv = lambda s, k, cin, cout: 2 * b * s * s * k * k * cin * cout  # noqa: E731
    dense = lambda n, din, dout: 2 * n * din * dout  # noqa: E731

    def res(s, cin, cout):
        skip = conv(s, 1, cin, cout) if cin != cout else 0
        return conv(s, 3, cin, cout) + dense(b, d, 2 * cout) + conv(s, 3, cout, cout) + skip

    no_input_grad = dense(b, d, d) + len(ch) * dense(b, w["cond"], d) + conv(side, 3, 3, ch[0])
    fwd = (1 + len(ch)) * dense(b, d, d)
    skips, width = [ch[0]], ch[0]
    for i, c in enumerate(ch):
        for _ in range(nb):
            fwd, width = fwd + res(side >> i, width, c), c
            skips.append(c)
        if i < len(ch) - 1:
            fwd += conv(side >> (i + 1), 3, c, c)
            skips.append(c)
    low = side >> (len(ch) - 1)
    fwd += 2 * res(low, width, width)
    if w["attention"]:
        n = b * low * low
        fwd += dense(n, width, 3 * width) + 2 * 2 * n * low * low * width + dense(n, width, width)
    for i in reversed(range(len(ch))):
        for _ in range(nb + 1):
            fwd, width = fwd + res(side >> i, width + skips.pop(), ch[i]), ch[i]
        if i > 0:
            fwd += conv(side >> (i - 1), 3, ch[i], ch[i])
    fwd += conv(side, 3, width, 3)
    return 3.0 * fwd + 2.0 * no_input_grad


def unet_tokens(w: dict) -> int:
    """Images per run-step (the unit throughput.py reports as tokens/s)."""
    return w["batch"]


def train_program(w: dict, steps: int, vmap_size: int = 0):
    """(init(seeds) -> state, jitted run(state, seeds) -> (state, losses [R, steps]))."""
    spec = model_config(w)
    hparams = {"train": {k: jnp.float32(w[k]) for k in
                         ("lr", "beta1", "beta2", "weight_decay", "grad_clip")}}
    opt = loop.optimizer(hparams, "adamw")

    def init_one(seed):
        params = diffusion.init(jax.random.key(seed), spec, w["res"], w["cond"])
        return {"params": params, "opt_state": opt.init(params)}

    def run_one(args):
        state, seed = args
        run_key = jax.random.fold_in(jax.random.key(seed), 1)

        def step(state, i):
            kx, kc, kn = jax.random.split(jax.random.fold_in(run_key, i), 3)
            x0 = jax.random.uniform(kx, (w["batch"], w["res"], w["res"], 3), minval=-1, maxval=1)
            cond = jax.random.uniform(kc, (w["batch"], w["cond"]))
            loss, grads = jax.value_and_grad(diffusion.denoising_loss)(
                state["params"], spec, kn, x0, cond)
            updates, opt_state = opt.update(grads, state["opt_state"], state["params"])
            return {"params": optax.apply_updates(state["params"], updates),
                    "opt_state": opt_state}, loss

        return jax.lax.scan(step, state, jnp.arange(steps))

    init = jax.jit(jax.vmap(init_one))
    run = jax.jit(lambda state, seeds: engine.over_runs(run_one, (state, seeds), vmap_size),
                  donate_argnums=0)
    return init, run


def bench_jaxsim(w: dict, runs: int, steps: int, vmap_size: int = 0, repeats: int = 1) -> dict:
    """throughput.py's jaxsim row: compile once, warm up, the fastest of `repeats` calls."""
    size = -(-runs // jax.device_count()) * jax.device_count() if vmap_size else runs
    seeds = jnp.arange(size, dtype=jnp.int32)
    init, run = train_program(w, steps, vmap_size)
    state = init(seeds)
    t0 = time.perf_counter()
    compiled = run.lower(state, seeds).compile()
    compile_s = time.perf_counter() - t0
    state, losses = compiled(state, seeds)
    losses.block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, losses = compiled(state, seeds)
        losses.block_until_ready()
        times.append(time.perf_counter() - t0)
    params = jax.tree.map(lambda a: a[0], state["params"])
    return {"seconds": min(times), "compile_s": compile_s,
            "finite": bool(np.isfinite(np.asarray(losses)).all()),
            "param_count": int(sum(x.size for x in jax.tree.leaves(params))),
            "padded_runs": size}
