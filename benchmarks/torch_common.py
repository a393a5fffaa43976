"""What the PyTorch baselines share: timing, the two training layouts, parameter and FLOP counts.

Every workload module (torch_gpt, torch_encoder, torch_sae) provides `setup(shape, runs, device,
fused) -> (models, data)`, `train_sequential(models, data, steps, compile_)` and
`train_ensemble(models, data, steps)`; the layouts themselves live here:

- `sequential`: one model and optimiser per run, runs trained one after another (eager, or each
  model wrapped in `torch.compile`);
- `ensemble`: all runs at once with `torch.func` (`stack_module_state` + `functional_call` +
  `vmap(grad)`) and one optimiser over the stacked parameters (Adam(W) is elementwise, so that
  is R independent optimisers).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn as nn


def timed(step: Callable[[], None], steps: int, warmup: int, device) -> float:
    """Seconds for `steps` calls of `step` after `warmup` untimed ones (device synchronised)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - t0


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def device_of(models) -> torch.device:
    return next(models[0].parameters()).device


def sequential(models, make_step: Callable, steps: int, compile_: bool = False,
               warmup: int = 2) -> float:
    """Seconds for `steps` steps of every run, one run after another.

    `make_step(r, model, fn)` returns run r's step closure; `fn` is the model, or the model
    wrapped in `torch.compile` (compiled once per run, during the warm-up steps).
    """
    total = 0.0
    for r, model in enumerate(models):
        fn = torch.compile(model) if compile_ else model
        total += timed(make_step(r, model, fn), steps, warmup, device_of(models))
    return total


class Ensemble:
    """R models as stacked parameters [R, ...] and a vmapped gradient of `loss_of`.

    `loss_of(fn, *batch) -> (loss, aux)` is the workload's loss of one run, `fn` that run's
    forward; `grads(*batch)` returns ({name: grad [R, ...]}, aux [R, ...]) for a batch whose
    tensors carry the run axis first. Buffers (e.g. per-run counters) are stacked too and may be
    updated in place between steps.
    """

    def __init__(self, models, loss_of: Callable, optimizer: Callable):
        from torch.func import functional_call, grad, stack_module_state, vmap

        params, self.buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")
        self.params = {k: v.detach().requires_grad_(False) for k, v in params.items()}

        def loss_one(p, b, *batch):
            return loss_of(lambda *inputs: functional_call(base, (p, b), inputs), *batch)

        self._grads = vmap(grad(loss_one, has_aux=True))
        self.opt = optimizer(list(self.params.values()), foreach=True)

    def grads(self, *batch):
        return self._grads(self.params, self.buffers, *batch)

    def apply(self, grads: dict) -> None:
        """One optimiser step of every run with the given (stacked) gradients."""
        for name, g in grads.items():
            self.params[name].grad = g
        self.opt.step()


def per_run_clip(grads: dict, max_norm: float) -> dict:
    """Scale each run's gradients so its global norm is at most `max_norm` (run axis first)."""
    norms = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in grads.values()))
    scale = max_norm / torch.clamp(norms, min=max_norm)
    return {k: g * scale.view(-1, *([1] * (g.dim() - 1))) for k, g in grads.items()}


def adamw(**kwargs) -> Callable:
    """An optimiser factory `(params, **extra) -> torch.optim.AdamW` with the workload's
    hyperparameters (the ensemble adds foreach=True; sequential runs keep torch's default)."""
    return lambda params, **extra: torch.optim.AdamW(params, **kwargs, **extra)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def counted_flops(fn: Callable[[], torch.Tensor]) -> int:
    """Matmul/attention FLOPs of `fn()` and its backward, by torch's FlopCounterMode (it counts
    mm, bmm, addmm, baddbmm and scaled_dot_product_attention — what the analytic count counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn().backward()
    return int(counter.get_total_flops())
