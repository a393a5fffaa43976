"""Edits per second: ROME edits vmapped as one jaxsim program vs a sequential Python loop of the
same edit, one jitted edit at a time (the way the reference code, kmeng01/rome, applies its
requests), on the same inputs.

    python benchmarks/edits.py [--edits 128] [--layers 3 --d-model 64 --d-mlp 256]

A GPT of the knowledge-graph CPU shape (random initial weights scaled up so that its MLP outputs
are of a trained model's size; speed does not depend on the weights) edits `--edits` random
requests (prompts of `--contexts` rows of 16 tokens, fact token `last`). Both
paths compute the same update of block 0's MLP projection; each is timed after a warm-up call
(compile excluded, reported apart). Prints one JSON object: edits_per_s of each path, the
speed-up, compile seconds, and the largest absolute difference between the two paths' updated
kernels (and that kernel's largest entry, for scale).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxsim.editing import edits, sites, values  # noqa: E402
from jaxsim.models.transformer import GPT  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edits", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--d-mlp", type=int, default=256)
    p.add_argument("--vocab", type=int, default=76)
    p.add_argument("--contexts", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--chunk", type=int, default=16, help="edits vmapped at once (lax.map)")
    args = p.parse_args(argv)
    length = 16
    model = GPT(vocab_size=args.vocab, max_length=length, num_layers=args.layers,
                d_model=args.d_model, num_heads=4, d_mlp=args.d_mlp)
    params = model.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32))["params"]
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a * (40 if "embedding" in str(path) else 5 if "kernel" in str(path)
                             else 1), params)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, args.vocab, (args.edits, args.contexts, length)),
                         jnp.int32)
    answer = jnp.full((args.edits, args.contexts), length - 1, jnp.int32)
    requests = sites.Request(tokens, answer, answer,
                             jnp.asarray(rng.integers(0, args.vocab, args.edits), jnp.int32),
                             tokens[:, 0].at[:, -1].set(0), answer[:, 0])
    walks = jnp.asarray(rng.integers(0, args.vocab, (64, length)), jnp.int32)
    cov = edits.key_stats(model, params, walks, (0,), 0.01).cov_SxKxK[0]
    hp = values.ValueHparams(*(jnp.float32(v) for v in (0.5, 0.0625, 0.5, 4.0)))

    def one(request):
        return edits.rome(model, params, request, cov, 0, args.steps, hp)[0]["block0"]["proj"][
            "kernel"]

    single = jax.jit(one)
    many = jax.jit(lambda r: jax.lax.map(one, r, batch_size=args.chunk))
    pick = lambda i: jax.tree.map(lambda a: a[i], requests)  # noqa: E731

    started = time.perf_counter()
    jax.block_until_ready(single(pick(0)))
    compile_single = time.perf_counter() - started
    started = time.perf_counter()
    jax.block_until_ready(many(requests))
    compile_many = time.perf_counter() - started

    started = time.perf_counter()
    looped = [np.asarray(single(pick(i))) for i in range(args.edits)]
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = np.asarray(jax.block_until_ready(many(requests)))
    vmap_s = time.perf_counter() - started
    diff = float(np.abs(batched - np.stack(looped)).max())
    out = {"edits": args.edits, "model": {"layers": args.layers, "d_model": args.d_model,
                                          "d_mlp": args.d_mlp, "vocab": args.vocab},
           "value_steps": args.steps, "contexts": args.contexts, "chunk": args.chunk,
           "jaxsim_vmapped_edits_per_s": args.edits / vmap_s,
           "sequential_loop_edits_per_s": args.edits / loop_s,
           "speedup": loop_s / vmap_s,
           "compile_s": {"vmapped": compile_many, "single": compile_single},
           "largest_difference": diff,
           "largest_kernel_entry": float(np.abs(batched).max()),
           "devices": [str(d) for d in jax.devices()]}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
