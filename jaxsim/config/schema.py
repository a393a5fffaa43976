"""The config schema: the core sections (`model`, `train`, `init`, `sweep`) and the `Config` that holds
them with the selected testbed's `task` section (each testbed's own dataclass, see
`jaxsim.testbed`).

Every field is declared with `field(default, ...)`: its range, choices and doc live in its
metadata, which validation (`jaxsim.config.keys`) and the key reference (`jaxsim keys`) read.
A field of `task`, `model` or `train` is either *static* (changes array shapes or control flow:
part of the compile-time `Spec`) or *dynamic* (a per-run scalar in the vmapped `Hparams` pytree),
marked ``dynamic=True``; ``dynamic="max"`` additionally keeps the group maximum in the static spec
(e.g. ``task.num_chains``: the bank size is static, the number of active chains is a per-run mask).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SAE_KINDS = ("relu", "relu_decnorm", "topk", "batchtopk", "jumprelu", "spade")
SCHEDULES = ("constant", "cosine", "linear", "rsqrt")   # jaxsim.training.schedules


def field(default: Any, *, dynamic: bool | str = False, choices: tuple | None = None,
          min: float | None = None, min_exclusive: bool = False, max: float | None = None,
          doc: str = "") -> Any:
    """A config field: its default plus the metadata validation and `jaxsim keys` read.

    dynamic: False (static: part of the compile-time Spec), True (a per-run value, vmapped) or
    "max" (per-run, with the group's maximum kept static, e.g. a bank size); choices: the allowed
    values; min/max: the range (min_exclusive: strictly above min); doc: one line for the docs.
    """
    meta = dict(dynamic=dynamic, choices=choices, min=min, min_exclusive=min_exclusive,
                max=max, doc=doc)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    name: str = field("gpt", choices=("gpt", "encoder", "sae", "mlp", "symmetric", "unet"),
                   doc="gpt: causal decoder (next token); encoder: BERT-style, one scalar per "
                       "position; sae: sparse autoencoder; mlp (sim): num_layers bias-free "
                       "dense layers of width d_mlp; symmetric (sim): f(x) = U U^T x, U is d x "
                       "d_mlp; unet: conditional diffusion model (epsilon prediction)")
    num_layers: int = field(2, min=1, max=1024,
                         doc="transformer blocks (gpt, encoder); dense layers (mlp); a model of "
                             "more than 2**31 parameters (estimated from the size keys) is "
                             "refused")
    d_model: int = field(64, min=1, doc="residual-stream width (gpt, encoder)")
    num_heads: int = field(4, min=1, doc="attention heads (divides d_model)")
    d_mlp: int = field(256, min=1, doc="hidden width of each MLP block (mlp, symmetric: the "
                       "hidden width)")
    positional: str = field("learned", choices=("learned", "rope"),
                            doc="learned absolute positions, or rotary embeddings")
    compute_dtype: str = field("float32", choices=("float32", "bfloat16"),
                            doc="gpt: dtype of activations and matmuls; parameters, optimizer "
                                "state, softmax, LayerNorm statistics and the loss stay float32 "
                                "(bfloat16: mixed precision for GPU/TPU throughput)")
    norm: str = field("pre", choices=("pre", "post"),
                   doc="LayerNorm placement of the encoder (post = BERT); the gpt is pre-LN")
    input: str = field("tokens", choices=("tokens", "continuous"),
                    doc="encoder input: value tokens (0.01 grid) or value x a learned vector")
    kind: str = field("topk", choices=SAE_KINDS, doc="sae architecture")
    d_sae: int = field(256, min=1, doc="sae: dictionary width (latents)")
    sparsity_coef: float = field(0.1, dynamic=True, min=0.0,
                              doc="sae: L1 (relu), L0 (jumprelu) or distance-L1 (spade) weight")
    k: int = field(8, dynamic="max", min=1,
                doc="sae: active latents per input (topk, batchtopk); a per-run mask under the "
                    "group's largest k")
    bandwidth: float = field(1e-3, dynamic=True, min=0.0, min_exclusive=True,
                          doc="sae (jumprelu): straight-through rectangle-kernel width")
    threshold_init: float = field(1e-3, dynamic=True, min=0.0, min_exclusive=True,
                               doc="sae (jumprelu): initial threshold (1e-3 in the reference "
                                   "code; raise it on data with O(1) pre-activations)")
    auxk_coef: float = field(1 / 32, dynamic=True, min=0.0, doc="sae (topk, batchtopk): AuxK weight")
    multi_topk_coef: float = field(0.0, dynamic="max", min=0.0,
                                doc="sae (topk): Multi-TopK (4k) term weight, 1/8 in Gao et al.; "
                                    "a shape group whose largest value is 0 skips the term")
    dead_steps: int = field(1000, dynamic=True, min=1,
                         doc="sae: steps without firing after which a latent counts as dead")
    normalize_input: bool = field(False, doc="sae: scale inputs by a constant (from the first "
                               "batch) so that E||x||^2 = D; metrics stay in input units")
    b_dec_init: str = field("median", choices=("median", "mean"),
                         doc="sae: decoder bias initialised at the data's geometric median or mean")
    activation: str = field("linear", choices=("linear", "relu"),
                         doc="mlp: hidden activation (linear = a deep linear network)")
    init_scale: float = field(1.0, dynamic=True, min=0.0, min_exclusive=True,
                           doc="mlp, symmetric: weights ~ N(0, init_scale^2 / fan_in)")
    causal_coef: float = field(0.0, dynamic="max", min=0.0,
                            doc="sae on activations: weight of the causal term (Menon et al.): "
                                "interpolate each point's code toward its nearest neighbour's, "
                                "splice the decoded activations into the source model, MSE of "
                                "its logits to the interpolated clean logits; 0 = off")
    channels: tuple = field((32, 64), min=1,
                            doc="unet: channels per resolution level, a list of positive "
                                "integers (the image halves between levels: its side must be "
                                "divisible by 2**(levels - 1))")
    blocks_per_level: int = field(1, min=1, max=16, doc="unet: residual blocks per level "
                                  "on the way down (one more on the way up)")
    attention: bool = field(False, doc="unet: single-head self-attention in the middle (at the "
                            "lowest resolution)")
    time_dim: int = field(64, min=2, doc="unet: width of the time and condition embeddings "
                          "(even: sin and cos halves)")
    timesteps: int = field(1000, min=2, doc="diffusion (unet): noise levels T; timesteps are "
                           "indices 0..T-1")
    schedule: str = field("linear", choices=("linear", "cosine"),
                          doc="diffusion (unet): betas linear in beta_start..beta_end (DDPM), or "
                              "the cosine schedule of alpha-bar (Nichol & Dhariwal; betas capped "
                              "at 0.999)")
    beta_start: float = field(1e-4, min=0.0, min_exclusive=True, max=1.0,
                              doc="diffusion (unet), linear schedule: beta of the first step")
    beta_end: float = field(0.02, min=0.0, min_exclusive=True, max=1.0,
                            doc="diffusion (unet), linear schedule: beta of the last step "
                                "(> beta_start)")
    sample_steps: int = field(50, min=1, doc="diffusion (unet): sampling steps of the analysis "
                              "(DDPM ancestral over that many respaced noise levels; at most "
                              "model.timesteps)")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = field(2000, min=1, doc="optimizer steps per run (every integer key is at "
                       "most 2**31 - 1: it becomes an int32)")
    batch_size: int = field(32, min=1, doc="training examples per step (fresh every step)")
    microbatch_size: int = field(0, min=0, doc="examples per gradient pass: the batch is split into "
                              "batch_size / microbatch_size passes under lax.scan whose gradients "
                              "are summed (the same loss and update up to float summation order); "
                              "smaller passes keep a CPU's activations in cache; 0 = one pass")
    lr: float = field(6e-4, dynamic=True, min=0.0, min_exclusive=True,
                      doc="peak learning rate")
    weight_decay: float = field(0.1, dynamic=True, min=0.0,
                                doc="decoupled weight decay (adamw); added to the gradient (sgd)")
    beta1: float = field(0.9, dynamic=True, min=0.0, max=1.0, doc="Adam's first-moment decay")
    beta2: float = field(0.95, dynamic=True, min=0.0, max=1.0,
                         doc="Adam's second-moment decay")
    grad_clip: float = field(1.0, dynamic=True, min=0.0, doc="global gradient-norm clip; 0 = off")
    warmup_steps: int = field(0, dynamic=True, min=0, doc="linear learning-rate warm-up steps")
    schedule: str = field("constant", dynamic=True, choices=SCHEDULES,
                          doc="learning rate after the warm-up: constant; cosine or linear decay "
                              "to min_lr_ratio x lr at decay_steps; rsqrt: x sqrt(W / step) "
                              "(W = max(warmup_steps, 1)); per run, the kind included (one "
                              "compile for a sweep over kinds)")
    decay_steps: int = field(0, dynamic=True, min=0,
                             doc="cosine, linear: the step at which the decay reaches the floor, "
                                 "counted from step 0 (warm-up included); 0 = train.steps")
    min_lr_ratio: float = field(0.1, dynamic=True, min=0.0, max=1.0,
                                doc="cosine, linear: the floor as a fraction of lr; rsqrt never "
                                    "goes below it")
    sparsity_warmup_steps: int = field(0, dynamic=True, min=0,
                                    doc="sae: linear warm-up of the sparsity coefficient")
    eval_every: int = field(100, min=1, doc="steps between evaluations (at most train.steps; "
                            "at most 100,000 evaluations per run)")
    eval_batch_size: int = field(128, min=1, doc="held-out sequences per evaluation split")
    optimizer: str = field("adamw", choices=("adamw", "sgd"),
                        doc="adamw, or plain SGD (lr, grad_clip, weight_decay added to the gradient as wd w; "
                            "beta1/beta2 unused); SAEs always use adamw")


@dataclass(frozen=True)
class SweepConfig:
    seeds: int = field(2, min=1, doc="seeds 0..seeds-1 per grid point (at most 1,000,000 runs "
                       "per sweep: the axes' lengths, over grids, times seeds)")
    axes: dict = field({}, doc="dotted key -> list of values (any task, model, train or init "
                       "key except task.name and model.name: one sweep trains one testbed and "
                       "one model kind)")
    grids: list = field([], doc="optional list of axes mappings: the runs are the union over grids "
                     "of the product of sweep.axes and that grid's axes")
    chunk_size: int = field(0, min=0, doc="runs per compiled call; 0 = a whole shape group")
    vmap_size: int = field(0, min=0, doc="runs vmapped together inside a chunk (lax.map over the "
                        "rest, per device); 0 = vmap the whole chunk")
    checkpoint_every: int = field(500, min=1, doc="steps between resumable checkpoints "
                                 "(taken at the first evaluation at or after each multiple)")
    save_steps: Any = field(None, doc="steps kept for analysis; null = ~20 log-spaced")
    plot: bool = field(True, doc="draw figures at the end of the sweep")
    memory_budget: Any = field("auto", doc="device memory per chunk: 'auto' (half of a device's "
                            "memory; CPU: half the RAM), GiB as a number, a share like '25%', or "
                            "'none'; larger chunks are split until the compiled program fits")


@dataclass(frozen=True)
class InitConfig:
    """Stages: a sweep whose runs start from the saved runs of another sweep."""
    source: str = field("", doc="a results directory whose saved runs this sweep's runs start "
                        "from ('' = train from scratch); with the testbed's stage 'init' the "
                        "parameters start as the source run's (the architecture keys must "
                        "match) and the optimizer state starts fresh; the source run's "
                        "parameters stay available, frozen, as hparams['source']")
    run: int = field(0, dynamic=True, min=0,
                     doc="the source run_id each run starts from: an ordinary sweep axis "
                         "(sweep.axes.init.run=[0,1,2,3] covers every pretrained seed in one "
                         "compile)")
    step: int = field(-1, min=-1, doc="the source checkpoint step (-1 = the last saved)")


CORE_SECTIONS = {"model": ModelConfig, "train": TrainConfig, "init": InitConfig,
                 "sweep": SweepConfig}
SECTION_NAMES = ("task", "model", "train", "init", "sweep")
SWEEPABLE = ("task", "model", "train", "init")


DEFAULT_TASK = "markov_mixture"   # the testbed of a config that names none


def _default_task() -> Any:
    from jaxsim import testbeds   # testbed packages import this module
    return testbeds.get(DEFAULT_TASK).config()


@dataclass(frozen=True)
class Config:
    """A whole config: the selected testbed's task section (its own dataclass, whose `name` is
    the testbed's name), the model, training and sweep sections."""
    task: Any = dataclasses.field(default_factory=_default_task)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTION_NAMES}


def section_class(cfg_or_task: Any, section: str) -> type:
    """The dataclass of a section: the core class, or the task section's own (testbed) class."""
    if section == "task":
        return type(cfg_or_task.task if isinstance(cfg_or_task, Config) else cfg_or_task)
    return CORE_SECTIONS[section]
