"""Cross-field config rules that no single field can check (`check_consistency`).

The core's rules (sizes, heads, the model a testbed trains, microbatches, dtype, evaluation
steps) run here; each testbed adds its own (`Testbed.rules`), run after the model rules. Every
failure raises `ConfigError` with one line naming the key and what is allowed; `where` prefixes
it (e.g. "sweep.axes.model.k=8: ").

Caps on plans no machine can run, refused at load before anything is written or compiled:
MAX_EVALS evaluations per run and MAX_PARAMS (estimated) parameters per model here, MAX_RUNS
runs per sweep in `jaxsim.config.build`; every integer key is an int32 (`coerce`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from jaxsim.errors import ConfigError

if TYPE_CHECKING:
    from jaxsim.config.schema import Config

Rule = Callable[["Config", str], None]

# Caps on impossible plans, refused before anything is written or compiled
MAX_RUNS = 1_000_000           # runs per sweep (axes' lengths over grids x sweep.seeds)
MAX_EVALS = 100_000            # evaluations per run (train.steps / train.eval_every)
MAX_PARAMS = 2**31             # estimated parameters of one run's model


def check_consistency(cfg: Config, where: str = "") -> None:
    """Every cross-field rule: the core's, then the selected testbed's."""
    from jaxsim import testbeds
    testbed = testbeds.of(cfg)
    _check_sizes(cfg, where)
    _check_heads(cfg, where)
    _check_pairing(cfg, testbed, where)
    for rule in (_check_causal_coef, _check_sae_k, _check_gpt_input, _check_unet):
        rule(cfg, where)
    for rule in testbed.rules:
        rule(cfg, where)
    _check_microbatch(cfg, where)
    _check_init(cfg, where)
    if cfg.model.compute_dtype != "float32" and cfg.model.name != "gpt":
        raise ConfigError(f"{where}model.compute_dtype={cfg.model.compute_dtype} applies to "
                          f"model.name=gpt; got model.name={cfg.model.name!r}, allowed: float32")
    t = cfg.train
    if t.steps % t.eval_every:
        raise ConfigError(f"{where}train.steps ({t.steps}) must be a multiple of "
                          f"train.eval_every ({t.eval_every})")


def _check_pairing(cfg: Config, testbed, where: str) -> None:
    """The model is one the testbed trains (an SAE needs the testbed's SAE data, any other
    model its objective)."""
    model = cfg.model.name
    if model in testbed.models:
        return
    from jaxsim import testbeds
    takers = [name for name, tb in testbeds.builtin().items() if model in tb.models]
    hint = f"; model.name={model} goes with task.name={' or '.join(takers)}" if takers else ""
    raise ConfigError(f"{where}model.name={model} does not go with task.name={cfg.task.name}: "
                      f"task.name={cfg.task.name} trains model.name="
                      f"{' or '.join(testbed.models)}{hint}")


def _check_init(cfg: Config, where: str) -> None:
    """init.run and init.step name a source run, and an objective may read the source model:
    they need init.source."""
    from jaxsim import testbeds
    init = cfg.init
    objective = testbeds.of(cfg).objective
    if objective is not None and objective.uses_source and not init.source:
        raise ConfigError(f"{where}task.name={cfg.task.name} trains against a source model "
                          f"(its objective reads the source's outputs): set init.source (a "
                          f"results directory) and init.run")
    if not init.source and (init.run != 0 or init.step != -1):
        raise ConfigError(f"{where}init.run={init.run} / init.step={init.step} pick a saved run "
                          f"of init.source, which is empty; set init.source (a results "
                          f"directory) or drop them")


def _check_microbatch(cfg: Config, where: str) -> None:
    size, batch = cfg.train.microbatch_size, cfg.train.batch_size
    if size and cfg.model.name == "sae":
        raise ConfigError(f"{where}train.microbatch_size applies to models trained through a task "
                          f"objective, not model.name=sae (its losses use whole-batch statistics); "
                          f"got {size}, allowed: 0")
    if size and batch % size:
        raise ConfigError(f"{where}train.microbatch_size ({size}) must divide train.batch_size "
                          f"({batch}); allowed: 0 (one pass) or a divisor of {batch}")


def _check_heads(cfg: Config, where: str) -> None:
    """The heads split d_model evenly (and, for RoPE, into pairs of dimensions)."""
    m = cfg.model
    if m.d_model % m.num_heads:
        raise ConfigError(f"{where}model.d_model ({m.d_model}) must be divisible by "
                          f"model.num_heads ({m.num_heads})")
    if m.positional == "rope" and (m.d_model // m.num_heads) % 2:
        raise ConfigError(f"{where}model.positional=rope needs an even head size "
                          f"(d_model/num_heads = {m.d_model // m.num_heads})")


def _check_causal_coef(cfg: Config, where: str) -> None:
    """The causal term needs a testbed that gives an SAE one (a source model to splice into)."""
    from jaxsim import testbeds
    sae = testbeds.of(cfg).sae
    if cfg.model.causal_coef > 0 and (sae is None or sae.causal_error is None):
        takers = [n for n, tb in testbeds.builtin().items()
                  if tb.sae is not None and tb.sae.causal_error is not None]
        raise ConfigError(f"{where}model.causal_coef ({cfg.model.causal_coef}) needs "
                          f"task.name={' or '.join(takers)} (an SAE spliced into a source model); "
                          f"got task.name={cfg.task.name!r}; allowed: 0 (off)")


def _check_sae_k(cfg: Config, where: str) -> None:
    """An SAE keeps at most its dictionary's k latents."""
    m = cfg.model
    if m.name == "sae" and m.k > m.d_sae:
        raise ConfigError(f"{where}model.k ({m.k}) must be <= model.d_sae ({m.d_sae})")


def _check_gpt_input(cfg: Config, where: str) -> None:
    """norm and input are encoder options; the gpt has one form."""
    m = cfg.model
    if m.name == "gpt" and (m.norm != "pre" or m.input != "tokens"):
        raise ConfigError(f"{where}model.norm/model.input apply to model.name=encoder; the gpt is "
                          f"pre-LN on tokens (got norm={m.norm!r}, input={m.input!r})")


def _check_unet(cfg: Config, where: str) -> None:
    """The diffusion keys agree with each other (the image side is the testbed's rule)."""
    m = cfg.model
    if m.name != "unet":
        return
    if m.time_dim % 2:
        raise ConfigError(f"{where}model.time_dim ({m.time_dim}) must be even (sin and cos "
                          f"halves of the time embedding)")
    if m.sample_steps > m.timesteps:
        raise ConfigError(f"{where}model.sample_steps ({m.sample_steps}) must be <= "
                          f"model.timesteps ({m.timesteps})")
    if m.schedule == "linear" and m.beta_start >= m.beta_end:
        raise ConfigError(f"{where}model.beta_start ({m.beta_start}) must be < model.beta_end "
                          f"({m.beta_end}) (the linear schedule's betas rise)")
    if len(m.channels) > 8:
        raise ConfigError(f"{where}model.channels has {len(m.channels)} levels; at most 8 "
                          f"(the image halves between levels)")


def param_estimate(cfg: Config) -> int:
    """A rough parameter count of one run's model from the static keys (embeddings of the
    task's vocab and positions where the task section names them; biases and norms ignored)."""
    m, task = cfg.model, cfg.task
    dim = getattr(task, "dim", 0)
    if m.name in ("gpt", "encoder"):
        embed = (getattr(task, "vocab", 0) + getattr(task, "context_length", 0)) * m.d_model
        return m.num_layers * (4 * m.d_model ** 2 + 2 * m.d_model * m.d_mlp) + embed
    if m.name == "sae":
        return 2 * dim * m.d_sae
    if m.name == "mlp":
        return m.num_layers * m.d_mlp * max(m.d_mlp, dim)
    if m.name == "unet":   # 3x3 convs of the res blocks (2 down + 3 up per block, widths ~ch)
        return sum(9 * 5 * (m.blocks_per_level + 1) * ch * ch for ch in m.channels)
    return dim * m.d_mlp   # symmetric: U is d x d_mlp


def _check_sizes(cfg: Config, where: str) -> None:
    """Plans no machine can run: too many evaluations per run, or too large a model."""
    t = cfg.train
    evals = -(-t.steps // t.eval_every)
    if evals > MAX_EVALS:
        raise ConfigError(f"{where}train.steps / train.eval_every = {t.steps} / {t.eval_every} "
                          f"= {evals:,} evaluations per run; at most {MAX_EVALS:,}: raise "
                          f"train.eval_every")
    params = param_estimate(cfg)
    if params > MAX_PARAMS:
        m = cfg.model
        transformer = ("num_layers", "d_model", "d_mlp")
        keys = {"gpt": transformer, "encoder": transformer, "sae": ("d_sae",),
                "mlp": ("num_layers", "d_mlp"), "unet": ("channels", "blocks_per_level")
                }.get(m.name, ("d_mlp",))
        sizes = [f"model.{k}={getattr(m, k)}" for k in keys]
        if m.name in ("sae", "mlp", "symmetric") and hasattr(cfg.task, "dim"):
            sizes.append(f"task.dim={cfg.task.dim}")
        raise ConfigError(f"{where}model.name={m.name} with {', '.join(sizes)} has about "
                          f"{params:.3g} parameters per run (estimated); at most 2**31 "
                          f"({MAX_PARAMS:.3g}): shrink the model")
