"""The PyTorch baseline for the diffusion workload: the same conditional U-Net as jaxsim's
`model.name: unet` (jaxsim/models/unet.py), the same DDPM ε-objective and AdamW, written the way
a researcher would in PyTorch, trained one run after another (`train_sequential`, eager or
compiled) or all runs at once with torch.func (`train_ensemble`; layouts in torch_common).

Module for module (parameter counts agree, throughput.py checks): time MLP and one condition
MLP per level (Linear, SiLU, Linear), a 3x3 input conv, residual blocks (GroupNorm, SiLU, conv,
GroupNorm scaled and shifted by Linear(SiLU(embedding)), SiLU, conv, 1x1 skip conv when the
width changes), stride-2 convs down, a middle of two blocks with optional single-head attention,
blocks reading the concatenated skips on the way up with nearest 2x upsampling + conv, then
GroupNorm, SiLU and a 3x3 conv to 3 channels. Tensors are NCHW (torch's native layout).

Data: random images in [-1, 1] and random condition vectors of the workload's shapes, drawn in
every timed step on both sides (the concept_images renderer is not reproduced here), then the
DDPM corruption at uniform timesteps of the linear schedule.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_common as common


def groups(channels: int) -> int:
    """jaxsim.models.unet.groups: the most groups (<= 32) with >= 4 channels each."""
    return max([g for g in range(1, 33) if channels % g == 0 and channels // g >= 4] or [1])


def mlp(d_in: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, width), nn.SiLU(), nn.Linear(width, width))


class ResBlock(nn.Module):
    def __init__(self, c_in: int, ch: int, emb: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups(c_in), c_in), nn.Conv2d(c_in, ch, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * ch)
        self.norm2, self.conv2 = nn.GroupNorm(groups(ch), ch), nn.Conv2d(ch, ch, 3, padding=1)
        self.skip = nn.Conv2d(c_in, ch, 1) if c_in != ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm, self.qkv, self.out = nn.GroupNorm(groups(c), c), nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x).flatten(2).transpose(1, 2)).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=-1)
        return x + self.out(attn @ v).transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """(x [B, 3, H, W], t [B] int, cond [B, K]) -> ε [B, 3, H, W]."""

    def __init__(self, cond_dim: int, channels: tuple, blocks: int, attention: bool, time_dim: int):
        super().__init__()
        self.channels, self.blocks, self.time_dim = channels, blocks, time_dim
        self.time = mlp(time_dim, time_dim)
        self.cond = nn.ModuleList(mlp(cond_dim, time_dim) for _ in channels)
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        skips, self.down, self.downsample = [channels[0]], nn.ModuleList(), nn.ModuleList()
        width = channels[0]
        for i, ch in enumerate(channels):
            for _ in range(blocks):
                self.down.append(ResBlock(width, ch, time_dim))
                width = ch
                skips.append(ch)
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1, self.mid2 = ResBlock(width, width, time_dim), ResBlock(width, width, time_dim)
        self.attn = Attention(width) if attention else None
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channels))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(width + skips.pop(), channels[i], time_dim))
                width = channels[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(width, width, 3, padding=1))
        self.norm_out = nn.GroupNorm(groups(width), width)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def sinusoidal(self, t):
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)

    def forward(self, x, t, cond):
        t_emb = self.time(self.sinusoidal(t))
        emb = [t_emb + mlp_i(cond) for mlp_i in self.cond]
        h = self.conv_in(x)
        skips, down, levels = [h], iter(self.down), len(self.channels)
        for i in range(levels):
            for _ in range(self.blocks):
                h = next(down)(h, emb[i])
                skips.append(h)
            if i < levels - 1:
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid1(h, emb[-1])
        h = self.attn(h) if self.attn is not None else h
        h = self.mid2(h, emb[-1])
        up, upsample = iter(self.up), iter(self.upsample)
        for i in reversed(range(levels)):
            for _ in range(self.blocks + 1):
                h = next(up)(torch.cat([h, skips.pop()], dim=1), emb[i])
            if i > 0:
                h = next(upsample)(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class Data:
    """Random images and conditions, the DDPM corruption (linear schedule) of each batch."""

    def __init__(self, runs: int, w: dict, device):
        beta = torch.linspace(w["beta_start"], w["beta_end"], w["timesteps"], dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1 - beta, 0).float().to(device)
        self.runs, self.w, self.device = runs, w, device
        self.opt = {"lr": w["lr"], "betas": (w["beta1"], w["beta2"]),
                    "weight_decay": w["weight_decay"]}

    def sample(self, leading: tuple = ()):
        w, dev = self.w, self.device
        x0 = torch.rand(leading + (w["batch"], 3, w["res"], w["res"]), device=dev) * 2 - 1
        cond = torch.rand(leading + (w["batch"], w["cond"]), device=dev)
        t = torch.randint(w["timesteps"], leading + (w["batch"],), device=dev)
        eps = torch.randn_like(x0)
        ab = self.alpha_bar[t][..., None, None, None]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t, cond, eps


def loss_of(fn, x_t, t, cond, eps):
    loss = F.mse_loss(fn(x_t, t, cond), eps)
    return loss, loss.detach()


def train_sequential(models, data: Data, steps: int, compile_: bool = False,
                     warmup: int = 2) -> float:
    def make_step(r, model, fn):
        opt = common.adamw(**data.opt)(model.parameters())

        def step():
            loss, _ = loss_of(fn, *data.sample())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), data.w["grad_clip"])
            opt.step()

        return step

    return common.sequential(models, make_step, steps, compile_, warmup)


def train_ensemble(models, data: Data, steps: int, warmup: int = 2) -> float:
    ens = common.Ensemble(models, loss_of, common.adamw(**data.opt))

    def step():
        grads, _ = ens.grads(*data.sample((data.runs,)))
        ens.apply(common.per_run_clip(grads, data.w["grad_clip"]))

    return common.timed(step, steps, warmup, data.device)


def setup(w: dict, runs: int, device, fused: bool = True):
    """(models, data) for throughput.py's unet workload shape `w` (`fused` is unused)."""
    models = [UNet(w["cond"], tuple(w["channels"]), w["blocks"], w["attention"],
                   w["time_dim"]).to(device) for _ in range(runs)]
    return models, Data(runs, w, device)


def step_flops(model: nn.Module, data: Data) -> int:
    """Counted conv/matmul FLOPs of one training step (forward + backward) of run 0."""
    batch = data.sample()
    return common.counted_flops(lambda: loss_of(model, *batch)[0])
