"""The steering config (`jaxsim steer DIR CONFIG`): one `steer` section, validated like a sweep
config (one line naming the bad key and what is allowed), with KEY=VALUE overrides."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from jaxsim import config as cfglib
from jaxsim.config import ConfigError, field
from jaxsim.config import section

METHODS = ("caa", "iti", "sae", "random")
MAX_PROMPTS = 65536


@dataclass(frozen=True)
class SteerConfig:
    behaviour: str = field("", doc="the behaviour to steer, one of the source testbed's "
                           "(empty: its first); markov_mixture: chain, pcfg: nest")
    step: int = field(-1, min=-1, doc="the source checkpoint steered (-1 = each run's last)")
    runs: list = field([], doc="source run ids to steer (empty: every run)")
    layers: list = field([], doc="blocks whose output residual stream (caa, random, sae) or "
                         "attention heads (iti) are steered (empty: every block)")
    methods: list = field(["caa", "iti", "random"],
                          doc="caa (mean activation difference), iti (top heads' mass-mean "
                              "shift), sae (a latent's decoder direction, needs steer.sae), "
                              "random (random directions of caa's norm)")
    multipliers: list = field([0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
                              doc="positive scales of each method's unit intervention; each is "
                                  "applied with + (promote) and - (suppress)")
    continuation: int = field(0, min=0, doc="continuation tokens (0 = the behaviour's default)")
    fit_prompts: int = field(256, min=4, max=MAX_PROMPTS,
                             doc="prompts the steering vectors are computed from")
    eval_prompts: int = field(256, min=1, max=MAX_PROMPTS,
                              doc="held-out prompts the likelihoods are measured on")
    iti_heads: int = field(0, min=0, doc="iti: heads shifted per layer, the best by probe "
                           "accuracy (0 = half the layer's heads, at least 1)")
    random_directions: int = field(8, min=1, max=1024,
                                   doc="random: directions drawn per layer")
    sae: str = field("", doc="sae: a results directory of SAEs trained on the steered sweep's "
                     "activations (task.name=activations, init.source = DIR); every SAE run "
                     "whose source run is steered gives one intervention")
    seed: int = field(0, min=0, doc="seed of the prompts and the random directions")


def _check(name: str, value: Any) -> Any:
    where = f"steer.{name}"
    if name in ("runs", "layers"):
        return section.int_list(value, where, 0)
    if name == "methods":
        if not isinstance(value, list) or not value or any(v not in METHODS for v in value):
            raise ConfigError(f"{where} must be a non-empty list of {', '.join(METHODS)}; "
                              f"got {value!r}")
        return tuple(dict.fromkeys(value))
    if name == "multipliers":
        ok = isinstance(value, list) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and
            0 < v <= 1e6 for v in value)
        if not ok:
            raise ConfigError(f"{where} must be a non-empty list of numbers in (0, 1e6] "
                              f"(each is applied as + and -), got {value!r}")
        return tuple(sorted({float(v) for v in value}))
    f = next(f for f in dataclasses.fields(SteerConfig) if f.name == name)
    return cfglib.check_value(f, value, where)


def from_dict(raw: Any) -> SteerConfig:
    """A validated SteerConfig from {"steer": {...}}."""
    cfg = section.parse(raw, "steer", SteerConfig, _check, "a steering config")
    if "sae" in cfg.methods and not cfg.sae:
        raise ConfigError("steer.methods has sae: set steer.sae to a results directory of SAEs "
                          "trained on the steered sweep's activations")
    return cfg


def load(path: str | Path | None, overrides: list[str] = ()) -> SteerConfig:
    """The steering config at `path` (None: every default) with steer.KEY=VALUE overrides."""
    return section.load(path, overrides, "steer", SteerConfig, from_dict, "steering config")


def apply_overrides(raw: Any, overrides: list[str]) -> Any:
    """`steer.KEY=VALUE` overrides on a raw steering config."""
    return section.apply_overrides(raw, overrides, "steer", SteerConfig)


def to_dict(cfg: SteerConfig) -> dict:
    return section.to_dict(cfg, "steer")
