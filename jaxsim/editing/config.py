"""The editing config (`jaxsim edit DIR CONFIG`): one `edit` section, validated like a sweep
config (one line naming the bad key and what is allowed), with edit.KEY=VALUE overrides."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from jaxsim import config as cfglib
from jaxsim.config import ConfigError, field
from jaxsim.config import section

METHODS = ("rome", "memit", "finetune", "alphaedit")
SCOPES = ("mlp", "all")
FACT_TOKENS = ("subject_last", "last")
REPR_SITES = ("subject", "query")
KINDS = ("counterfactual", "corrective")


@dataclass(frozen=True)
class EditConfig:
    step: int = field(-1, min=-1, doc="the source checkpoint edited (-1 = each run's last)")
    runs: list = field([], doc="source run ids to edit (empty: every run)")
    kind: str = field("counterfactual", choices=KINDS,
                      doc="counterfactual (trained facts get the entity edit.distances steps "
                          "beyond their object) or corrective (held-out, logical or "
                          "compositional, facts the model answers wrongly at the edited prompt "
                          "get their true object; edit.distances is then ignored, distance 0)")
    methods: list = field(["rome", "memit", "finetune"],
                          doc="rome (rank-one update of one MLP), memit (batch update over "
                              "edit.memit_layers), finetune (gradient steps on the edited "
                              "fact), alphaedit (memit's update projected on the null space of "
                              "the preserved keys)")
    fact_token: str = field("last", choices=FACT_TOKENS,
                            doc="where keys are read and values written (the reference's "
                                "fact_token): subject_last (the subject's token) or last (the "
                                "prompt's last token, the relation, where the answer is read)")
    layer: int = field(0, min=0, doc="the block whose MLP output projection rome and finetune "
                       "rewrite (subject_last: below the last block, whose MLP at the subject "
                       "never reaches the answer)")
    memit_layers: list = field([], doc="blocks memit and alphaedit spread the update over, "
                               "the last one holding z (empty: every block but the last)")
    distances: list = field([1, 2, 4, 8, 16],
                            doc="cycle distances d of the counterfactual edits: the new object "
                                "is d steps beyond the true one along the relation's cycle")
    num_edits: int = field(128, min=1, max=65536,
                           doc="edited facts per run (trained facts drawn uniformly; the same "
                               "facts at every distance and for every method), each edited alone "
                               "(rome, finetune) or in batches of edit.batch_size (memit, "
                               "alphaedit)")
    batch_size: int = field(16, min=1, max=65536,
                            doc="memit, alphaedit: edits written at once; divides edit.num_edits")
    contexts: int = field(4, min=1, max=64,
                          doc="prompts per edit that the value is optimised on (the edited "
                              "prompt and contexts - 1 more walks into the subject)")
    paraphrases: int = field(4, min=1, max=64,
                             doc="fresh contexts of the edited fact for paraphrase efficacy")
    value_steps: int = field(20, min=1, max=10000,
                             doc="gradient steps of the value optimisation (v_num_grad_steps)")
    value_lr: float = field(0.5, min=0.0, min_exclusive=True, doc="its Adam lr (v_lr)")
    kl_factor: float = field(0.0625, min=0.0, doc="KL weight of the value loss (kl_factor)")
    value_weight_decay: float = field(0.5, min=0.0, doc="weight of ‖δ‖ / ‖v_0‖² (v_weight_decay)")
    rome_clamp: float = field(4.0, min=0.0, min_exclusive=True,
                              doc="rome: ‖δ‖ <= clamp ‖v_0‖ (clamp_norm_factor)")
    memit_clamp: float = field(0.75, min=0.0, min_exclusive=True,
                               doc="memit, alphaedit: the same clamp for z (clamp_norm_factor)")
    memit_cov_weight: float = field(1.0, min=0.0, min_exclusive=True,
                                    doc="memit: λ of (λ C + K Kᵀ) (mom2_update_weight)")
    alphaedit_threshold: float = field(0.01, min=0.0, max=1.0,
                                       doc="alphaedit: null space = eigenvalues of C below this "
                                           "share of the largest")
    alphaedit_l2: float = field(1.0, min=0.0, min_exclusive=True,
                                doc="alphaedit: the ridge term of its solve (L2)")
    finetune_steps: int = field(20, min=1, max=10000, doc="finetune: Adam steps")
    finetune_lr: float = field(1e-2, min=0.0, min_exclusive=True, doc="finetune: Adam lr")
    finetune_scope: str = field("mlp", choices=SCOPES,
                                doc="finetune: mlp (edit.layer's MLP output projection) or all "
                                    "weights")
    cov_sequences: int = field(256, min=1, max=65536,
                               doc="training walks whose keys (every token) estimate C")
    eval_facts: int = field(256, min=1, max=65536,
                            doc="facts (uniform over all N x R, every kind) whose accuracy is "
                                "measured before and after each edit (the edited one excluded)")
    repr_layer: int = field(-1, min=-1, doc="block whose output residual stream at the entity "
                            "token is the entity's representation for R (-1: the last block)")
    repr_site: str = field("subject", choices=REPR_SITES,
                           doc="the entity representations R is computed on: subject (the "
                               "residual after edit.repr_layer at the entity token, in "
                               "edit.repr_contexts walks into it, with random relations) or "
                               "query (the testbed's query site: the residual at the relation "
                               "token of every fact of the entity, averaged per cycle over the "
                               "cycle's relations and edit.repr_contexts walks, the C cycles "
                               "concatenated)")
    repr_contexts: int = field(4, min=1, max=64,
                               doc="walks into each entity its representation is averaged over "
                                   "(query: walks per fact)")
    chunk: int = field(64, min=1, max=65536,
                       doc="edits (rome, finetune) or batches (memit, alphaedit) vmapped at once "
                           "(memory), the rest under lax.map")
    seed: int = field(0, min=0, doc="seed of the edited facts and all prompts")


def _check(name: str, value: Any) -> Any:
    where = f"edit.{name}"
    if name in ("runs", "memit_layers"):
        return section.int_list(value, where, 0)
    if name == "distances":
        out = section.int_list(value, where, 1)
        if not out:
            raise ConfigError(f"{where} must be a non-empty list of integers >= 1, got {value!r}")
        return out
    if name == "methods":
        if not isinstance(value, list) or not value or any(v not in METHODS for v in value):
            raise ConfigError(f"{where} must be a non-empty list of {', '.join(METHODS)}; "
                              f"got {value!r}")
        return tuple(dict.fromkeys(value))
    f = next(f for f in dataclasses.fields(EditConfig) if f.name == name)
    return cfglib.check_value(f, value, where)


def from_dict(raw: Any) -> EditConfig:
    """A validated EditConfig from {"edit": {...}}."""
    cfg = section.parse(raw, "edit", EditConfig, _check, "an editing config")
    if cfg.num_edits % cfg.batch_size:
        raise ConfigError(f"edit.batch_size ({cfg.batch_size}) must divide edit.num_edits "
                          f"({cfg.num_edits})")
    return cfg


def load(path: str | Path | None, overrides: list[str] = ()) -> EditConfig:
    """The editing config at `path` (None: every default) with edit.KEY=VALUE overrides."""
    return section.load(path, overrides, "edit", EditConfig, from_dict, "editing config")


def apply_overrides(raw: Any, overrides: list[str]) -> Any:
    """`edit.KEY=VALUE` overrides on a raw editing config."""
    return section.apply_overrides(raw, overrides, "edit", EditConfig)


def to_dict(cfg: EditConfig) -> dict:
    return section.to_dict(cfg, "edit")
