"""The PyTorch baseline for sparse autoencoders: the same TopK SAE, toy data and Adam as jaxsim's
`model.name: sae`, `kind: topk` on `concept_geometry` subspaces, written the way a researcher
would in PyTorch, in the three variants of torch_gpt (`train_sequential` eager or compiled,
`train_ensemble` with torch.func; layouts in torch_common).

Model (jaxsim.models.sae, kind topk): W_enc [D, F], b_enc [F], W_dec [F, D] (unit-norm rows),
b_dec [D] (initialised at the geometric median of a data batch, untimed); the encoder sees
x - b_dec; z keeps the k largest ReLU activations (torch.topk + scatter); x_hat = z W_dec + b_dec.
Loss: mean_b ||x - x_hat||^2 + auxk_coef x AuxK, where AuxK (Gao et al.) reconstructs the
detached residual from the top-k_aux *dead* latents (dead: not fired for `dead_steps` steps),
normalised by the residual's variance, 0 when none is dead. AuxK is computed at every step on
both sides (no data-dependent branch), as jaxsim does. Each step: Adam(W), the decoder-row
gradient's component along its row removed before the step, rows renormalised after it, the
dead-latent counters updated from z.

Neither side computes the Multi-TopK term: its weight is 0 here, and jaxsim skips it for a
shape group whose largest weight is 0 (`model.multi_topk_coef` is a per-run value under the
group's maximum).

Data (concept_geometry subspaces: C Gaussian clusters on random affine subspaces of intrinsic
dimension 1, 2, 4, ... of R^D, plus isotropic noise) is generated inside every timed step from
each run's constants, as it is in jaxsim's compiled step; the constants (random orthonormal
bases by QR, cluster centres) are drawn once per run, untimed, on both sides.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common as common

INIT_BATCH = 1024      # points for the b_dec initialisation (jaxsim's sae_loop.INIT_BATCH)


def adamw_kwargs(w: dict) -> dict:
    """Adam(W) hyperparameters of the workload shape `w` (jaxsim's train.* values)."""
    return {"lr": w["lr"], "betas": (w["beta1"], w["beta2"]), "weight_decay": w["weight_decay"]}


def keep_topk(acts: torch.Tensor, k: int) -> torch.Tensor:
    """acts with all but the k largest entries of each row set to 0."""
    values, idx = acts.topk(k, dim=-1)
    return torch.zeros_like(acts).scatter(-1, idx, values)


class TopKSAE(nn.Module):
    """x [B, D] -> (training loss, z [B, F]); `steps_since_fired` [F] is a buffer."""

    def __init__(self, d: int, f: int, k: int, k_aux: int, auxk_coef: float, dead_steps: int):
        super().__init__()
        w = F.normalize(torch.randn(f, d), dim=-1)
        self.W_enc, self.W_dec = nn.Parameter(w.T.clone()), nn.Parameter(w)
        self.b_enc, self.b_dec = nn.Parameter(torch.zeros(f)), nn.Parameter(torch.zeros(d))
        self.register_buffer("steps_since_fired", torch.zeros(f, dtype=torch.long))
        self.k, self.k_aux, self.auxk_coef, self.dead_steps = k, k_aux, auxk_coef, dead_steps

    def forward(self, x):
        acts = F.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        z = keep_topk(acts, self.k)
        x_hat = z @ self.W_dec + self.b_dec
        mse = (x - x_hat).pow(2).sum(-1).mean()
        dead = self.steps_since_fired >= self.dead_steps
        return mse + self.auxk_coef * self.auxk(acts, x - x_hat, dead), z

    def auxk(self, acts, residual, dead):
        """AuxK loss: the detached residual from the top-k_aux dead latents (0 if none is dead)."""
        e = residual.detach()
        idx = torch.where(dead, acts, float("-inf")).topk(self.k_aux, dim=-1).indices
        keep = torch.zeros_like(acts).scatter(-1, idx, 1.0) * dead
        e_hat = (acts * keep) @ self.W_dec
        variance = (e - e.mean(0)).pow(2).sum(-1).mean()
        err = (e - e_hat).pow(2).sum(-1).mean() / variance.clamp_min(1e-12)
        return torch.where(dead.any(), err, torch.zeros_like(err))


def project_decoder_grad(w_dec: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The gradient less its component along each (unit) decoder row; any leading run axes."""
    unit = F.normalize(w_dec, dim=-1)
    return g - (g * unit).sum(-1, keepdim=True) * unit


@torch.no_grad()
def after_step(w_dec: torch.Tensor, steps_since_fired: torch.Tensor, z: torch.Tensor) -> None:
    """Decoder rows back to unit norm; dead-latent counters reset where z fired, else + 1."""
    w_dec.copy_(F.normalize(w_dec, dim=-1))
    fired = (z != 0).any(-2)
    steps_since_fired.copy_(torch.where(fired, 0, steps_since_fired + 1))


def concept_dims(num_concepts: int, max_dim: int) -> torch.Tensor:
    """[C] intrinsic dimension of each concept: the (c + 1/2) / C quantile of equal shares of
    1, 2, 4, ... <= max_dim (jaxsim's concept_geometry.subspace_constants)."""
    choices = torch.tensor([2 ** i for i in range(max_dim.bit_length()) if 2 ** i <= max_dim])
    cdf = torch.arange(1, len(choices) + 1) / len(choices)
    quantiles = (torch.arange(num_concepts) + 0.5) / num_concepts
    return choices[torch.searchsorted(cdf, quantiles, right=True).clamp_max(len(choices) - 1)]


class Sampler:
    """Per-run subspace constants; `sample()` draws a batch [R, B, D] from each run's concepts.
    Carries the runs' Adam(W) hyperparameters (`opt`) for the training functions."""

    def __init__(self, runs: int, w: dict, device):
        c, m, d = w["concepts"], w["max_concept_dim"], w["d"]
        self.dims = concept_dims(c, m).to(device)
        frames = torch.linalg.qr(torch.randn(runs, c, d, m, device=device)).Q.transpose(-1, -2)
        active = torch.arange(m, device=device)[:, None] < self.dims[:, None, None]
        self.bases = torch.where(active, frames, 0.0)                       # [R, C, M, D]
        self.means = w["offset"] * F.normalize(torch.randn(runs, c, d, device=device), dim=-1)
        self.runs, self.batch, self.noise, self.device = runs, w["batch"], w["noise"], device
        self.opt = adamw_kwargs(w)

    def sample(self, run: slice | int = slice(None), batch: int | None = None):
        means, bases = self.means[run], self.bases[run]
        c, m, d = bases.shape[-3:]
        idx = torch.randint(c, means.shape[:-2] + (batch or self.batch,), device=self.device)
        coords = torch.randn(idx.shape + (m,), device=self.device)
        coords = torch.where(torch.arange(m, device=self.device) < self.dims[idx][..., None],
                             coords, 0.0)
        centre = torch.gather(means, -2, idx[..., None].expand(*idx.shape, d))
        basis = torch.gather(bases, -3, idx[..., None, None].expand(*idx.shape, m, d))
        x = centre + torch.einsum("...bm,...bmd->...bd", coords, basis)
        return x + self.noise * torch.randn_like(x)


def loss_of(fn, x):
    """(training loss, z) of the SAE `fn` on a batch [B, D]."""
    return fn(x)


def train_sequential(models, sampler: Sampler, steps: int, compile_: bool = False,
                     warmup: int = 2) -> float:
    """Seconds for `steps` steps of every run, trained one run after another."""
    def make_step(r, model, fn):
        opt = common.adamw(**sampler.opt)(model.parameters())

        def step():
            loss, z = loss_of(fn, sampler.sample(r))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            model.W_dec.grad = project_decoder_grad(model.W_dec.detach(), model.W_dec.grad)
            opt.step()
            after_step(model.W_dec, model.steps_since_fired, z)

        return step

    return common.sequential(models, make_step, steps, compile_, warmup)


def train_ensemble(models, sampler: Sampler, steps: int, warmup: int = 2) -> float:
    """Seconds for `steps` steps of all runs at once with torch.func."""
    ens = common.Ensemble(models, loss_of, common.adamw(**sampler.opt))

    def step():
        grads, z = ens.grads(sampler.sample())
        grads["W_dec"] = project_decoder_grad(ens.params["W_dec"], grads["W_dec"])
        ens.apply(grads)
        after_step(ens.params["W_dec"], ens.buffers["steps_since_fired"], z)

    return common.timed(step, steps, warmup, sampler.device)


@torch.no_grad()
def geometric_median(x: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """[D] Weiszfeld iterations from the mean (jaxsim's sae.geometric_median)."""
    m = x.mean(0)
    for _ in range(iters):
        weights = 1.0 / (x - m).norm(dim=-1).clamp_min(1e-8)
        m = (weights[:, None] * x).sum(0) / weights.sum()
    return m


def setup(w: dict, runs: int, device, fused: bool = True):
    """(models, sampler) for throughput.py's SAE workload shape `w` (`fused` is unused)."""
    sampler = Sampler(runs, w, device)
    models = []
    for r in range(runs):
        model = TopKSAE(w["d"], w["d"] * w["expansion"], w["k"], max(w["d"] // 2, 1),
                        w["auxk_coef"], w["dead_steps"]).to(device)
        with torch.no_grad():
            model.b_dec.copy_(geometric_median(sampler.sample(r, INIT_BATCH)))
        models.append(model)
    return models, sampler


def step_flops(model: nn.Module, sampler: Sampler) -> int:
    """Counted matmul FLOPs of one training step (forward + backward) of run 0 (not its data)."""
    x = sampler.sample(0)
    return common.counted_flops(lambda: loss_of(model, x)[0])
