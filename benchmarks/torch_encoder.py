"""The PyTorch baseline for matrix completion: the same BERT-style encoder, data and AdamW as
jaxsim's `matrix_completion` task with `model.name: encoder` (norm pre, input continuous),
written the way a researcher would in PyTorch, in the three variants of torch_gpt
(`train_sequential` eager or compiled, `train_ensemble` with torch.func; layouts in
torch_common).

Model (jaxsim.models.Encoder): an embedding LayerNorm over value/mask embedding + learned
position, pre-LN blocks (LayerNorm eps 1e-12) with bidirectional attention, an observed entry
embedded as value x a learned vector (init std d^-1/2) and a masked one as a learned mask
vector, a final LayerNorm and a Dense(1) read-out per position.
Loss: MSE over all n^2 entries (jaxsim.training.objectives `masked_regression`'s training loss).
AdamW, no gradient clipping (jaxsim's grad_clip 0).

Data generation (X = U V^T with U, V ~ U[-1, 1]^{n x r}, rounded to 0.01; Bernoulli(mask_prob)
mask) is inside every timed step, as it is in jaxsim's compiled step.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common as common
from torch_gpt import Block

LN_EPS = 1e-12     # BERT's, as in jaxsim.models.encoder
INIT_STD = 0.02


def adamw_kwargs(w: dict) -> dict:
    """AdamW hyperparameters of the workload shape `w` (jaxsim's train.lr, beta1, beta2,
    weight_decay)."""
    return {"lr": w["lr"], "betas": (w["beta1"], w["beta2"]), "weight_decay": w["weight_decay"]}


class Encoder(nn.Module):
    """(values [B, P], masked [B, P] bool) -> predictions [B, P]."""

    def __init__(self, length: int, layers: int, d: int, heads: int, d_mlp: int,
                 fused: bool = True):
        super().__init__()
        self.value_embed = nn.Parameter(torch.randn(d) * d ** -0.5)
        self.mask_embed = nn.Parameter(torch.randn(d) * INIT_STD)
        self.pos = nn.Parameter(torch.randn(length, d) * INIT_STD)
        self.ln_embed = nn.LayerNorm(d, eps=LN_EPS)
        self.blocks = nn.ModuleList(Block(d, heads, d_mlp, fused, causal=False, eps=LN_EPS)
                                    for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, eps=LN_EPS)
        self.readout = nn.Linear(d, 1)

    def forward(self, values, masked):
        observed = torch.where(masked, 0.0, values)[..., None] * self.value_embed
        x = torch.where(masked[..., None], self.mask_embed, observed) + self.pos[: values.shape[-1]]
        x = self.ln_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x))[..., 0]


class Sampler:
    """Fresh rank-r n x n matrices every call: `sample()` gives (values, masked), [R, B, n^2].
    Carries the runs' AdamW hyperparameters (`opt`) for the training functions."""

    def __init__(self, runs: int, n: int, rank: int, mask_prob: float, batch: int, device,
                 opt: dict):
        self.runs, self.n, self.rank, self.mask_prob, self.batch = runs, n, rank, mask_prob, batch
        self.device, self.opt = device, opt

    def sample(self, run: slice | int = slice(None)):
        lead = (self.runs,) if isinstance(run, slice) else ()
        shape = lead + (self.batch, self.n, self.rank)
        u = torch.rand(shape, device=self.device) * 2 - 1
        v = torch.rand(shape, device=self.device) * 2 - 1
        x = torch.round(u @ v.transpose(-1, -2) * 100) / 100
        values = x.flatten(-2)
        return values, torch.rand(values.shape, device=self.device) < self.mask_prob


def loss_of(fn, values, masked):
    """(MSE over all entries of the model `fn`'s predictions, no aux)."""
    return F.mse_loss(fn(values, masked), values), ()


def train_sequential(models, sampler: Sampler, steps: int, compile_: bool = False,
                     warmup: int = 2) -> float:
    """Seconds for `steps` steps of every run, trained one run after another."""
    def make_step(r, model, fn):
        opt = common.adamw(**sampler.opt)(model.parameters())

        def step():
            loss, _ = loss_of(fn, *sampler.sample(r))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    return common.sequential(models, make_step, steps, compile_, warmup)


def train_ensemble(models, sampler: Sampler, steps: int, warmup: int = 2) -> float:
    """Seconds for `steps` steps of all runs at once with torch.func."""
    ens = common.Ensemble(models, loss_of, common.adamw(**sampler.opt))

    def step():
        ens.apply(ens.grads(*sampler.sample())[0])

    return common.timed(step, steps, warmup, sampler.device)


def setup(w: dict, runs: int, device, fused: bool = True):
    """(models, sampler) for throughput.py's encoder workload shape `w`."""
    models = [Encoder(w["n"] ** 2, w["layers"], w["d"], w["heads"], w["d_mlp"], fused).to(device)
              for _ in range(runs)]
    return models, Sampler(runs, w["n"], w["rank"], w["mask_prob"], w["batch"], device,
                           adamw_kwargs(w))


def step_flops(model: nn.Module, sampler: Sampler) -> int:
    """Counted matmul FLOPs of one training step (forward + backward) of run 0 (not its data)."""
    batch = sampler.sample(0)
    return common.counted_flops(lambda: loss_of(model, *batch)[0])
