"""The config schema: the four sections' fields with their defaults, ranges, choices and docs.

Every field of `task`, `model` and `train` is either *static* (changes array shapes or control
flow: part of the compile-time `Spec`) or *dynamic* (a per-run scalar in the vmapped `Hparams`
pytree), marked ``dynamic=True``; ``dynamic="max"`` additionally keeps the group maximum in the
static spec (e.g. ``task.num_chains``: the bank size is static, the number of active chains is a
per-run mask). Loading, overrides and validation live in `jaxsim.config`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SAE_KINDS = ("relu", "relu_decnorm", "topk", "batchtopk", "jumprelu", "spade")


def _f(default: Any, *, dynamic: bool | str = False, choices: tuple | None = None,
       min: float | None = None, min_exclusive: bool = False, max: float | None = None,
       doc: str = "") -> Any:
    meta = dict(dynamic=dynamic, choices=choices, min=min, min_exclusive=min_exclusive,
                max=max, doc=doc)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TaskConfig:
    name: str = _f("markov_mixture",
                   choices=("markov_mixture", "matrix_completion", "concept_geometry",
                            "activations", "sim", "pcfg", "graph_walk"),
                   doc="task generator")
    num_states: int = _f(10, min=2, doc="k, states of each Markov chain")
    alpha: float = _f(1.0, dynamic=True, min=0.0, min_exclusive=True,
                      doc="Dirichlet concentration of each transition row")
    num_chains: int = _f(64, dynamic="max", min=1, doc="N, chains in the training mixture")
    weights: str = _f("uniform", choices=("uniform", "random"), doc="mixture weights")
    context_length: int = _f(64, min=2, doc="tokens per sequence (markov_mixture)")
    matrix_size: int = _f(7, min=2, doc="n, an n x n matrix is n^2 tokens (matrix_completion)")
    rank: int = _f(2, dynamic="max", min=1,
                   doc="r, rank of X = U V^T (factor columns beyond r are masked to zero)")
    mask_prob: float = _f(0.3, dynamic=True, min=0.0, max=0.95,
                          doc="probability that an entry is masked (to be completed)")
    factor_dist: str = _f("uniform", choices=("uniform", "gaussian", "laplace"),
                          doc="distribution of the entries of U and V")
    factor_scale: float = _f(1.0, dynamic=True, min=0.0, min_exclusive=True,
                             doc="uniform: U[-s, s]; gaussian: std s; laplace: scale s")
    geometry: str = _f("subspaces", choices=("subspaces", "moons", "circles"),
                       doc="concept_geometry: Gaussian clusters on subspaces of mixed intrinsic "
                           "dimension, or nonlinearly separable 1-D arcs")
    dim: int = _f(64, min=2, doc="concept_geometry, sim: D (sim: d), the ambient dimension")
    num_concepts: int = _f(8, min=1, doc="concept_geometry: C, concepts (moons: always 2); "
                           "sim: s, Gaussian clusters (at most 6)")
    max_concept_dim: int = _f(8, min=1, doc="concept_geometry (subspaces): intrinsic dimensions "
                              "1, 2, 4, ... up to this, in equal shares")
    noise_std: float = _f(0.0, dynamic=True, min=0.0, doc="concept_geometry: ambient noise std")
    source: str = _f("", doc="activations: a results directory holding a trained gpt sweep")
    source_run: int = _f(0, min=0, doc="activations: run_id of the source model")
    source_step: int = _f(-1, min=-1, doc="activations: checkpoint step (-1 = the last saved)")
    site: str = _f("block0", doc="activations: residual-stream site: embed, block0, block1, ...")
    concept_offset: float = _f(4.0, dynamic=True, min=0.0,
                               doc="concept_geometry (subspaces): norm of each cluster's centre "
                                   "(0 = subspaces through the origin)")
    concept_mean: float = _f(1.0, dynamic=True,
                             doc="sim: mu_1, the first cluster's mean along e_1; mu_p = "
                                 "concept_mean + (p - 1) concept_mean_step (all must be > 0)")
    concept_mean_step: float = _f(1.0, dynamic=True, doc="sim: mu_{p+1} - mu_p")
    concept_noise: float = _f(0.05, dynamic=True, min=0.0,
                              doc="sim: sigma_1, noise std of concept coordinate 1; sigma_p = "
                                  "concept_noise + (p - 1) concept_noise_step (all must be >= 0)")
    concept_noise_step: float = _f(0.0, dynamic=True, doc="sim: sigma_{p+1} - sigma_p")
    rotate: bool = _f(False, doc="sim: apply one random orthogonal matrix per run (Householder "
                      "product from its key) to every training and test point")
    grammar: str = _f("dyck2", choices=("dyck2", "expr", "english"),
                      doc="pcfg: the formal language (Dyck-2, prefix expressions, toy English); "
                          "one sentence per sequence, at most context_length - 2 tokens")
    graph: str = _f("grid", choices=("grid", "ring", "hex", "triangular"),
                    doc="graph_walk: square grid (4-neighbour, no wraparound), ring, hexagonal "
                        "(honeycomb) lattice drawn as a brick wall, or triangular lattice (the "
                        "grid plus the diagonal (i, j)-(i+1, j+1) of every cell; not bipartite, "
                        "like a ring of odd size: grid, hex and even rings are)")
    graph_size: int = _f(4, min=2, doc="graph_walk: grid/hex/triangular side (size^2 nodes); "
                         "ring: nodes")
    vocab: int = _f(64, min=2, doc="graph_walk: token vocabulary (>= nodes); each sequence maps "
                    "the nodes injectively to random tokens")
    pretrain_frac: float = _f(0.0, dynamic=True, min=0.0, max=1.0,
                              doc="graph_walk: fraction of training sequences that use the run's "
                                  "one fixed node -> token map (a pretraining semantics)")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _f("gpt", choices=("gpt", "encoder", "sae", "mlp", "symmetric"),
                   doc="gpt: causal decoder (next token); encoder: BERT-style, one scalar per "
                       "position; sae: sparse autoencoder; mlp (sim): num_layers bias-free "
                       "dense layers of width d_mlp; symmetric (sim): f(x) = U U^T x, U is d x d_mlp")
    num_layers: int = _f(2, min=1)
    d_model: int = _f(64, min=1)
    num_heads: int = _f(4, min=1)
    d_mlp: int = _f(256, min=1)
    positional: str = _f("learned", choices=("learned", "rope"))
    compute_dtype: str = _f("float32", choices=("float32", "bfloat16"),
                            doc="gpt: dtype of activations and matmuls; parameters, optimizer "
                                "state, softmax, LayerNorm statistics and the loss stay float32 "
                                "(bfloat16: mixed precision for GPU/TPU throughput)")
    norm: str = _f("pre", choices=("pre", "post"),
                   doc="LayerNorm placement of the encoder (post = BERT); the gpt is pre-LN")
    input: str = _f("tokens", choices=("tokens", "continuous"),
                    doc="encoder input: value tokens (0.01 grid) or value x a learned vector")
    kind: str = _f("topk", choices=SAE_KINDS, doc="sae architecture")
    d_sae: int = _f(256, min=1, doc="sae: dictionary width (latents)")
    sparsity_coef: float = _f(0.1, dynamic=True, min=0.0,
                              doc="sae: L1 (relu), L0 (jumprelu) or distance-L1 (spade) weight")
    k: int = _f(8, dynamic="max", min=1,
                doc="sae: active latents per input (topk, batchtopk); a per-run mask under the "
                    "group's largest k")
    bandwidth: float = _f(1e-3, dynamic=True, min=0.0, min_exclusive=True,
                          doc="sae (jumprelu): straight-through rectangle-kernel width")
    threshold_init: float = _f(1e-3, dynamic=True, min=0.0, min_exclusive=True,
                               doc="sae (jumprelu): initial threshold (1e-3 in the reference "
                                   "code; raise it on data with O(1) pre-activations)")
    auxk_coef: float = _f(1 / 32, dynamic=True, min=0.0, doc="sae (topk, batchtopk): AuxK weight")
    multi_topk_coef: float = _f(0.0, dynamic="max", min=0.0,
                                doc="sae (topk): Multi-TopK (4k) term weight, 1/8 in Gao et al.; "
                                    "a shape group whose largest value is 0 skips the term")
    dead_steps: int = _f(1000, dynamic=True, min=1,
                         doc="sae: steps without firing after which a latent counts as dead")
    normalize_input: bool = _f(False, doc="sae: scale inputs by a constant (from the first "
                               "batch) so that E||x||^2 = D; metrics stay in input units")
    b_dec_init: str = _f("median", choices=("median", "mean"),
                         doc="sae: decoder bias initialised at the data's geometric median or mean")
    activation: str = _f("linear", choices=("linear", "relu"),
                         doc="mlp: hidden activation (linear = a deep linear network)")
    init_scale: float = _f(1.0, dynamic=True, min=0.0, min_exclusive=True,
                           doc="mlp, symmetric: weights ~ N(0, init_scale^2 / fan_in)")
    causal_coef: float = _f(0.0, dynamic="max", min=0.0,
                            doc="sae on activations: weight of the causal term (Menon et al.): "
                                "interpolate each point's code toward its nearest neighbour's, "
                                "splice the decoded activations into the source model, MSE of "
                                "its logits to the interpolated clean logits; 0 = off")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _f(2000, min=1)
    batch_size: int = _f(32, min=1)
    microbatch_size: int = _f(0, min=0, doc="examples per gradient pass: the batch is split into "
                              "batch_size / microbatch_size passes under lax.scan whose gradients "
                              "are summed (the same loss and update up to float summation order); "
                              "smaller passes keep a CPU's activations in cache; 0 = one pass")
    lr: float = _f(6e-4, dynamic=True, min=0.0, min_exclusive=True)
    weight_decay: float = _f(0.1, dynamic=True, min=0.0)
    beta1: float = _f(0.9, dynamic=True, min=0.0, max=1.0)
    beta2: float = _f(0.95, dynamic=True, min=0.0, max=1.0)
    grad_clip: float = _f(1.0, dynamic=True, min=0.0, doc="global gradient-norm clip; 0 = off")
    warmup_steps: int = _f(0, dynamic=True, min=0, doc="linear learning-rate warm-up steps")
    sparsity_warmup_steps: int = _f(0, dynamic=True, min=0,
                                    doc="sae: linear warm-up of the sparsity coefficient")
    eval_every: int = _f(100, min=1, doc="steps between evaluations (at most train.steps)")
    eval_batch_size: int = _f(128, min=1, doc="held-out sequences per evaluation split")
    optimizer: str = _f("adamw", choices=("adamw", "sgd"),
                        doc="adamw, or plain SGD (lr, grad_clip, weight_decay added to the gradient as wd w; "
                            "beta1/beta2 unused); SAEs always use adamw")


@dataclass(frozen=True)
class SweepConfig:
    seeds: int = _f(2, min=1, doc="seeds 0..seeds-1 per grid point")
    axes: dict = _f({}, doc="dotted key -> list of values")
    grids: list = _f([], doc="optional list of axes mappings: the runs are the union over grids "
                     "of the product of sweep.axes and that grid's axes")
    chunk_size: int = _f(0, min=0, doc="runs per compiled call; 0 = a whole shape group")
    vmap_size: int = _f(0, min=0, doc="runs vmapped together inside a chunk (lax.map over the "
                        "rest, per device); 0 = vmap the whole chunk")
    checkpoint_every: int = _f(500, min=1, doc="steps between resumable checkpoints "
                                 "(taken at the first evaluation at or after each multiple)")
    save_steps: Any = _f(None, doc="steps kept for analysis; null = ~20 log-spaced")
    plot: bool = _f(True, doc="draw figures at the end of the sweep")
    memory_budget: Any = _f("auto", doc="device memory per chunk: 'auto' (half of a device's "
                            "memory; CPU: half the RAM), GiB as a number, a share like '25%', or "
                            "'none'; larger chunks are split until the compiled program fits")


SECTIONS = {"task": TaskConfig, "model": ModelConfig, "train": TrainConfig, "sweep": SweepConfig}
SWEEPABLE = ("task", "model", "train")
