"""Cross-field config rules that no single field can check (`config.check_consistency`).

The rules that depend on the task are registered in `TASK_RULES`, keyed by task.name: each task
lists its own rules and, where they run for it, the model's rules (`MODEL_RULES`, which apply to
every task). The order is the order the checks have always had, so a config that breaks several
rules still names the same one first (a sim or graph_walk config, say, is checked against its
model before its task fields).

Every failure raises `ConfigError` with one line naming the key and what is allowed; `where`
prefixes it (e.g. "sweep.axes.model.k=8: ").
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from jaxsim.errors import ConfigError

if TYPE_CHECKING:
    from jaxsim.config import Config

Rule = Callable[["Config", str], None]

SIM_MODELS = ("mlp", "symmetric")
SIM_MAX_CONCEPTS = 6


def check_consistency(cfg: Config, where: str = "") -> None:
    """Cross-field rules that no single field can check."""
    _check_heads(cfg, where)
    _check_pairing(cfg, where)
    for rule in TASK_RULES.get(cfg.task.name, MODEL_RULES):
        rule(cfg, where)
    _check_microbatch(cfg, where)
    if cfg.model.compute_dtype != "float32" and cfg.model.name != "gpt":
        raise ConfigError(f"{where}model.compute_dtype={cfg.model.compute_dtype} applies to "
                          f"model.name=gpt; got model.name={cfg.model.name!r}, allowed: float32")
    t = cfg.train
    if t.steps % t.eval_every:
        raise ConfigError(f"{where}train.steps ({t.steps}) must be a multiple of "
                          f"train.eval_every ({t.eval_every})")


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


def _check_pairing(cfg: Config, where: str) -> None:
    """Models made for one task and tasks made for one model (mlp|symmetric with sim is
    `_check_sim_models`, a model rule: it has always run after the other model rules)."""
    m, task = cfg.model, cfg.task
    if m.name == "encoder" and task.name != "matrix_completion":
        raise ConfigError(f"{where}model.name=encoder needs task.name=matrix_completion, "
                          f"got {task.name!r}")
    if task.name == "matrix_completion" and m.name != "encoder":
        raise ConfigError(f"{where}task.name=matrix_completion needs model.name=encoder, "
                          f"got {m.name!r}")
    if (m.name == "sae") != (task.name in ("concept_geometry", "activations")):
        raise ConfigError(f"{where}model.name=sae goes with task.name=concept_geometry or "
                          f"activations (got model.name={m.name!r}, task.name={task.name!r})")
    if task.name == "pcfg" and m.name != "gpt":
        raise ConfigError(f"{where}task.name=pcfg needs model.name=gpt, got {m.name!r}")


def _check_rank(cfg: Config, where: str) -> None:
    """matrix_completion: a rank-r matrix of size n needs r <= n."""
    if cfg.task.rank > cfg.task.matrix_size:
        raise ConfigError(f"{where}task.rank ({cfg.task.rank}) must be <= task.matrix_size "
                          f"({cfg.task.matrix_size})")


def _check_source(cfg: Config, where: str) -> None:
    """activations: the activations come from a trained source sweep."""
    if not cfg.task.source:
        raise ConfigError(f"{where}task.name=activations needs task.source (a results directory "
                          f"of a trained gpt sweep)")


def _check_pcfg_context(cfg: Config, where: str) -> None:
    """pcfg: the shortest sequence is BOS, two tokens, EOS."""
    if cfg.task.context_length < 4:
        raise ConfigError(f"{where}task.context_length must be >= 4 for task.name=pcfg "
                          f"(BOS, a sentence of >= 2 tokens, EOS), got "
                          f"{cfg.task.context_length}")


def _check_causal_coef(cfg: Config, where: str) -> None:
    """The causal term needs a source model to splice the SAE into."""
    m = cfg.model
    if m.causal_coef > 0 and cfg.task.name != "activations":
        raise ConfigError(f"{where}model.causal_coef ({m.causal_coef}) needs task.name=activations "
                          f"(an SAE spliced into a source model); got task.name={cfg.task.name!r}; "
                          f"allowed: 0 (off)")


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


def _check_sim_models(cfg: Config, where: str) -> None:
    """task.name=sim pairs with model.name mlp|symmetric, both ways."""
    task, m = cfg.task, cfg.model
    if (task.name == "sim") != (m.name in SIM_MODELS):
        raise ConfigError(f"{where}model.name={m.name!r} and task.name={task.name!r} do not go "
                          f"together: task.name=sim needs model.name in {', '.join(SIM_MODELS)} "
                          f"and those models need task.name=sim")


def _check_sim(cfg: Config, where: str) -> None:
    """sim: a deep enough relu mlp; s <= min(d, 6); every mu_p > 0 and sigma_p >= 0
    (mu_p = concept_mean + (p - 1) concept_mean_step, sigma_p likewise)."""
    task, m = cfg.task, cfg.model
    if m.name == "mlp" and m.activation == "relu" and m.num_layers == 1:
        raise ConfigError(f"{where}model.activation=relu needs model.num_layers >= 2 (a one-layer "
                          f"mlp is linear)")
    if not 1 <= task.num_concepts <= min(task.dim, SIM_MAX_CONCEPTS):
        raise ConfigError(f"{where}task.num_concepts ({task.num_concepts}) must be between 1 and "
                          f"min(task.dim, {SIM_MAX_CONCEPTS}) = "
                          f"{min(task.dim, SIM_MAX_CONCEPTS)} for task.name=sim")
    last = task.num_concepts - 1
    if min(task.concept_mean, task.concept_mean + last * task.concept_mean_step) <= 0:
        raise ConfigError(f"{where}task.concept_mean + (p - 1) task.concept_mean_step must be > 0 "
                          f"for p = 1..{task.num_concepts}; got concept_mean="
                          f"{task.concept_mean}, concept_mean_step={task.concept_mean_step}")
    if task.concept_noise + last * task.concept_noise_step < 0:
        raise ConfigError(f"{where}task.concept_noise + (p - 1) task.concept_noise_step must be "
                          f">= 0 for p = 1..{task.num_concepts}; got concept_noise="
                          f"{task.concept_noise}, concept_noise_step={task.concept_noise_step}")


def check_graph(cfg: Config, where: str = "") -> None:
    """graph_walk: a gpt, a drawable graph, enough tokens for an injective node map."""
    t = cfg.task
    if cfg.model.name != "gpt":
        raise ConfigError(f"{where}task.name=graph_walk needs model.name=gpt, got "
                          f"{cfg.model.name!r}")
    if t.graph == "ring" and t.graph_size < 3:
        raise ConfigError(f"{where}task.graph_size must be >= 3 for task.graph=ring, got "
                          f"{t.graph_size}")
    nodes = t.graph_size if t.graph == "ring" else t.graph_size ** 2
    if t.vocab < nodes:
        raise ConfigError(f"{where}task.vocab ({t.vocab}) must be >= the graph's nodes ({nodes}: "
                          f"task.graph={t.graph}, task.graph_size={t.graph_size})")


MODEL_RULES: tuple[Rule, ...] = (_check_causal_coef, _check_sae_k, _check_gpt_input,
                                 _check_sim_models)

TASK_RULES: dict[str, tuple[Rule, ...]] = {
    "markov_mixture": MODEL_RULES,
    "matrix_completion": (_check_rank, *MODEL_RULES),
    "concept_geometry": MODEL_RULES,
    "activations": (_check_source, *MODEL_RULES),
    "pcfg": (_check_pcfg_context, *MODEL_RULES),
    "sim": (*MODEL_RULES, _check_sim),
    "graph_walk": (*MODEL_RULES, check_graph),
}
