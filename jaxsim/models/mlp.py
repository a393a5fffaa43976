"""The structured-identity-mapping models (task `sim`): bias-free MLPs and f(x) = U U^T x.

- `MLP`: `num_layers` dense layers without biases, hidden width `d_mlp`, `activation` between
  them (linear: a deep linear network; num_layers = 1 is the one-layer model f = W x whose
  gradient flow has a closed form).
- `Symmetric`: f(x) = U U^T x with U in R^{d x d_mlp} (the paper's symmetric 2-layer linear
  model, whose W = U U^T obeys dW/dt = WA + AW - (AW^2 + W^2 A + 2 WAW) / 2).

Weights start N(0, 1 / fan_in); `scale_init` multiplies them by the per-run `model.init_scale`
(small init = the swing-by regime). Inputs and outputs are [B, D].
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsim.config import ModelConfig

_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


class MLP(nn.Module):
    dim: int
    width: int
    num_layers: int
    activation: str

    @nn.compact
    def __call__(self, x_BxD: jax.Array) -> jax.Array:
        h = x_BxD
        for layer in range(self.num_layers):
            last = layer == self.num_layers - 1
            h = nn.Dense(self.dim if last else self.width, use_bias=False, kernel_init=_INIT,
                         name=f"dense{layer}")(h)
            if not last and self.activation == "relu":
                h = nn.relu(h)
        return h


class Symmetric(nn.Module):
    dim: int
    width: int

    @nn.compact
    def __call__(self, x_BxD: jax.Array) -> jax.Array:
        u_DxH = self.param("u", _INIT, (self.dim, self.width))
        return (x_BxD @ u_DxH) @ u_DxH.T


def build_mlp(model: ModelConfig, dim: int, _length: int) -> MLP:
    return MLP(dim, model.d_mlp, model.num_layers, model.activation)


def build_symmetric(model: ModelConfig, dim: int, _length: int) -> Symmetric:
    return Symmetric(dim, model.d_mlp)


def end_to_end(params: dict, model: ModelConfig) -> jax.Array:
    """[D, D] the map x -> f(x) of a linear model as a matrix W (f(x) = W x)."""
    if model.name == "symmetric":
        return params["u"] @ params["u"].T
    if model.activation != "linear":
        raise ValueError("end_to_end needs a linear model (model.activation=linear)")
    w = None
    for layer in range(model.num_layers):
        k = params[f"dense{layer}"]["kernel"]          # [in, out]: h_out = h_in @ k
        w = k if w is None else w @ k
    return w.T


def scale_init(model: ModelConfig, params: dict, hparams: dict) -> dict:
    """Multiply every weight by `model.init_scale` (mlp, symmetric; other models unchanged)."""
    if model.name not in ("mlp", "symmetric"):
        return params
    scale = jnp.asarray(hparams["model"]["init_scale"], jnp.float32)
    return jax.tree.map(lambda p: p * scale.astype(p.dtype), params)
