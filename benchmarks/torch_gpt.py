"""The PyTorch baseline: the same GPT, Markov-mixture sampler and AdamW as jaxsim, written the way
a researcher would in PyTorch, in three variants (the layouts are in torch_common):

- `train_sequential`: one model and optimiser per run, runs trained one after another (eager, or
  each model wrapped in `torch.compile`);
- `train_ensemble`: all runs at once with `torch.func` (`stack_module_state` + `functional_call`
  + `vmap(grad)`) and a per-run AdamW (AdamW is elementwise, so one AdamW over the stacked
  parameters is R independent AdamWs; the gradient-norm clip is computed per run).

Data generation (inverse-CDF Markov rollouts from each run's chain bank) is inside every timed
step, as it is in jaxsim's compiled step.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common as common

ADAMW = {"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.1}
CLIP = 1.0


class Block(nn.Module):
    """Pre-LN transformer block: causal (the GPT) or bidirectional (causal=False, the encoder)."""

    def __init__(self, d: int, heads: int, d_mlp: int, fused: bool = True, causal: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        self.heads, self.fused, self.causal = heads, fused, causal
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, d_mlp), nn.Linear(d_mlp, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.fused:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:  # plain ops: torch.func.vmap has no batching rule for the fused CPU kernel
            scores = (q @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)
            if self.causal:
                causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
                scores = scores.masked_fill(~causal, float("-inf"))
            a = scores.softmax(-1) @ v
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    """Pre-LN decoder, learned positions, tied embeddings: jaxsim.models.GPT's layout."""

    def __init__(self, vocab: int, length: int, layers: int, d: int, heads: int, d_mlp: int,
                 fused: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(length, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, d_mlp, fused) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.embed.weight.T


def stationary(bank):
    k = bank.shape[-1]
    system = bank.transpose(-1, -2) - torch.eye(k, device=bank.device)
    system[..., -1, :] = 1.0
    rhs = torch.zeros(bank.shape[:-1], device=bank.device)
    rhs[..., -1] = 1.0
    return torch.linalg.solve(system, rhs).clamp_min(0)


class Sampler:
    """Per-run chain banks [R, N, K, K]; `sample()` rolls out [R, B, L] sequences."""

    def __init__(self, runs: int, chains: int, k: int, batch: int, length: int, device):
        dirichlet = torch.distributions.Dirichlet(torch.ones(k, device=device))
        self.bank = dirichlet.sample((runs, chains, k))
        self.pi = stationary(self.bank)
        self.runs, self.chains, self.batch, self.length = runs, chains, batch, length

    def sample(self, run: slice | int = slice(None)):
        bank, pi = self.bank[run], self.pi[run]
        lead = bank.shape[:-3]
        idx = torch.randint(self.chains, lead + (self.batch,), device=bank.device)
        chain = torch.gather(bank, -3, idx[..., None, None].expand(*idx.shape, *bank.shape[-2:]))
        start = torch.gather(pi, -2, idx[..., None].expand(*idx.shape, pi.shape[-1]))
        x = _inverse_cdf(start, torch.rand(idx.shape, device=bank.device))
        out = [x]
        for _ in range(self.length - 1):
            row = torch.gather(chain, -2, x[..., None, None].expand(*x.shape, 1, chain.shape[-1]))
            x = _inverse_cdf(row[..., 0, :], torch.rand(idx.shape, device=bank.device))
            out.append(x)
        return torch.stack(out, -1)


def _inverse_cdf(probs, u):
    cdf = probs.cumsum(-1)
    return (cdf <= (u * cdf[..., -1])[..., None]).sum(-1).clamp_max(probs.shape[-1] - 1)


def _loss(logits, tokens):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))


AUTOCAST = None  # torch.bfloat16: the forward under autocast (mixed precision; --dtype bfloat16)


def loss_of(fn, tokens):
    """(next-token loss of the model `fn` on a [B, L] batch, no aux)."""
    with torch.autocast(tokens.device.type, dtype=AUTOCAST or torch.bfloat16,
                        enabled=AUTOCAST is not None):
        logits = fn(tokens[:, :-1])
    return _loss(logits.float(), tokens[:, 1:]), ()


def train_sequential(models, sampler: Sampler, steps: int, compile_: bool = False,
                     warmup: int = 2) -> float:
    """Seconds for `steps` steps of every run, trained one run after another."""
    def make_step(r, model, fn):
        opt = common.adamw(**ADAMW)(model.parameters())

        def step():
            loss, _ = loss_of(fn, sampler.sample(r))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()

        return step

    return common.sequential(models, make_step, steps, compile_, warmup)


def train_ensemble(models, sampler: Sampler, steps: int, warmup: int = 2) -> float:
    """Seconds for `steps` steps of all runs at once with torch.func."""
    ens = common.Ensemble(models, loss_of, common.adamw(**ADAMW))

    def step():
        grads, _ = ens.grads(sampler.sample())
        ens.apply(common.per_run_clip(grads, CLIP))

    return common.timed(step, steps, warmup, sampler.bank.device)


def make_models(runs: int, vocab, length, layers, d, heads, d_mlp, device, fused=True):
    return [GPT(vocab, length, layers, d, heads, d_mlp, fused).to(device=device)
            for _ in range(runs)]


def setup(w: dict, runs: int, device, fused: bool = True):
    """(models, sampler) for the workload shape `w` (throughput.py's GPT workloads)."""
    models = make_models(runs, w["k"], w["length"], w["layers"], w["d"], w["heads"], w["d_mlp"],
                         device, fused)
    return models, Sampler(runs, w["chains"], w["k"], w["batch"], w["length"], device)


def step_flops(model: nn.Module, sampler: Sampler) -> int:
    """Counted matmul FLOPs of one training step (forward + backward) of run 0 (not its data)."""
    tokens = sampler.sample(0)
    return common.counted_flops(lambda: loss_of(model, tokens)[0])


param_count = common.param_count
