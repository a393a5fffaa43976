"""Formal languages as a testbed (`task.name: pcfg`): Dyck-2, prefix expressions, toy English.

Menon, Shrivastava, Krueger, Lubana, "Analyzing (In)Abilities of SAEs via Formal Languages"
(2024). A sequence is BOS, one sentence of the grammar `task.grammar`, EOS, then PAD up to
`task.context_length` (the reference code also trains on one sentence per sequence).

Exact vectorised sampling. A derivation is a fixed-size symbol stack under `lax.scan`: each step
pops the top symbol; a category emits a uniformly drawn word; a nonterminal draws a production
and pushes its right-hand side in reverse, emitting the first symbol at once when it is a
category. With a sentence cap of c = context_length - 2 tokens, every derivation of a sentence of
at most c tokens ends within 2c + 2 steps on a stack of c + 1 (every pending symbol yields at
least one token; a step that emits nothing adds a symbol that will), so a draw that has not ended,
overflows the stack or emits more than c tokens is a sentence longer than c. Such draws are
rejected and the row is redrawn (`lax.while_loop`): the accepted sentences are exact draws from
the grammar *conditioned on length <= c* (this matters for Dyck-2, whose lengths are heavy-tailed;
tests compare the length law with the grammar's exact one). A row still rejected after
`MAX_TRIES` draws (probability < 1e-15 here) is flagged `valid_B = False` and masked from the loss.

Ground truth per token (`features_BxLxF`, -1 outside the sentence; named by
`grammars.GRAMMARS[g].features`) comes out of the same scan; `legal_next_BxLxV` is the exact set
of tokens that can follow each prefix (`recognise.py`). Shapes: B batch, L context, V vocab.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsim.config import Spec
from jaxsim.testbeds.pcfg import grammars as grammars
from jaxsim.testbeds.pcfg import recognise as recognise
from jaxsim.testbeds import streams as streams
from jaxsim.testbeds.pcfg.grammars import BOS
from jaxsim.testbeds.pcfg.grammars import EOS
from jaxsim.testbeds.pcfg.grammars import PAD

TRAIN_STREAM, EVAL_ID = 1, 2
SPLITS = ("id",)
MAX_TRIES = 32


class Batch(NamedTuple):
    tokens_BxL: jax.Array        # int32: BOS, sentence, EOS, PAD...
    loss_mask_BxL: jax.Array     # bool: the token is a target to predict (sentence and EOS)
    features_BxLxF: jax.Array    # int32 per-token ground truth, -1 outside the sentence
    legal_next_BxLxV: jax.Array  # bool: tokens that may follow the prefix ending at t
    length_B: jax.Array          # int32 sentence length (without BOS/EOS)
    valid_B: jax.Array           # bool: accepted within MAX_TRIES draws


class Derivation(NamedTuple):
    """One sentence draw (per sequence; the caller vmaps). `words_C` etc. have c = cap slots."""
    words_C: jax.Array
    cat_C: jax.Array
    a_C: jax.Array
    b_C: jax.Array
    length: jax.Array
    ok: jax.Array                # ended within the caps
    prods_T: jax.Array           # production drawn at each step (-1: a category was popped)


def derive(key: jax.Array, grammar: str, cap: int) -> Derivation:
    """Draw one derivation of at most `cap` tokens (ok=False if it would be longer)."""
    t = grammars.tables(grammar)
    tab = jax.tree.map(jnp.asarray, t)
    steps, depth = 2 * cap + 2, cap + 1
    width = t.rhs_PxR.shape[1]
    slots_S, slots_C = jnp.arange(depth), jnp.arange(cap)
    u_Tx3 = jax.random.uniform(key, (steps, 3))

    def word(cat, u):
        return (tab.cat_start_C[cat] + jnp.minimum(
            (u * tab.cat_size_C[cat]).astype(jnp.int32), tab.cat_size_C[cat] - 1))

    def step(carry, u_3):
        sym_S, a_S, b_S, sp, out, count, over = carry
        top = jnp.maximum(sp - 1, 0)
        live = sp > 0
        sym, a, b = sym_S[top], a_S[top], b_S[top]
        is_cat = sym >= t.num_nonterminals
        nt = jnp.minimum(sym, t.num_nonterminals - 1)
        cdf = jnp.cumsum(tab.nt_probs_NxK[nt])
        prod = tab.nt_prods_NxK[nt, jnp.minimum((cdf <= u_3[0] * cdf[-1]).sum(),
                                               cdf.shape[0] - 1)]
        rhs, n = tab.rhs_PxR[prod], tab.rhs_len_P[prod]
        a_R = a + tab.inc_PxR[prod]
        b_R = jnp.where(tab.set_PxR[prod] >= 0, tab.set_PxR[prod], b)
        first_cat = rhs[0] >= t.num_nonterminals
        emit = live & (is_cat | first_cat)
        e_cat = jnp.where(is_cat, sym, rhs[0]) - t.num_nonterminals
        e_a, e_b = jnp.where(is_cat, a, a_R[0]), jnp.where(is_cat, b, b_R[0])
        pushed = jnp.where(live & ~is_cat, n - first_cat.astype(jnp.int32), 0)
        for m in range(width):              # rhs[n-1-m] goes to stack slot top + m
            j = jnp.clip(n - 1 - m, 0, width - 1)
            at = (slots_S == top + m) & (m < pushed)
            sym_S = jnp.where(at, rhs[j], sym_S)
            a_S, b_S = jnp.where(at, a_R[j], a_S), jnp.where(at, b_R[j], b_S)
        new_sp = jnp.where(live, sp - 1 + pushed, 0)
        at_out = (slots_C == count) & emit
        w = word(e_cat, u_3[1])
        out = tuple(jnp.where(at_out, v, o) for v, o in zip((w, e_cat, e_a, e_b), out))
        over = over | (emit & (count >= cap)) | (new_sp > depth)
        record = jnp.where(live & ~is_cat, prod, -1)
        return (sym_S, a_S, b_S, jnp.minimum(new_sp, depth), out,
                count + emit.astype(jnp.int32), over), record

    zeros_S = jnp.zeros((depth,), jnp.int32)
    init = (zeros_S.at[0].set(t.start), zeros_S, zeros_S - 1, jnp.int32(1),
            tuple(jnp.zeros((cap,), jnp.int32) for _ in range(4)), jnp.int32(0),
            jnp.bool_(False))
    (_, _, _, sp, out, count, over), prods = jax.lax.scan(step, init, u_Tx3)
    return Derivation(*out, jnp.minimum(count, cap), (sp == 0) & ~over, prods)


def sample_sentences(key: jax.Array, grammar: str, cap: int, batch_size: int) -> tuple:
    """[B] accepted derivations (exact draws conditioned on length <= cap) and `valid_B`."""
    draw = jax.vmap(lambda k: derive(k, grammar, cap))

    def fresh(i):
        return draw(jax.random.split(jax.random.fold_in(key, i), batch_size))

    def cond(c):
        return (c[0] < MAX_TRIES) & ~c[1].ok.all()

    def body(c):
        i, kept = c
        new = fresh(i)
        take = new.ok & ~kept.ok
        pick = lambda n, o: jnp.where(take.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
        return i + 1, jax.tree.map(pick, new, kept)

    _, kept = jax.lax.while_loop(cond, body, (jnp.int32(1), fresh(0)))
    return kept, kept.ok


def token_features(grammar: str, cat_C, a_C, b_C) -> jax.Array:
    """[..., F] the grammar's named features from (category, a, b) (module docstring)."""
    if grammar == "dyck2":      # categories o0 o1 c0 c1
        return jnp.stack([a_C, cat_C % 2, (cat_C < 2).astype(jnp.int32), b_C], -1)
    if grammar == "expr":       # categories Digit UnOp BinOp TernOp
        root = b_C < 0
        return jnp.stack([a_C, cat_C, jnp.where(root, 0, b_C // 4),
                          jnp.where(root, -1, b_C % 4)], -1)
    return jnp.stack([cat_C, a_C, b_C], -1)


def sample(key: jax.Array, consts: tuple, spec: Spec, hparams: dict, batch_size: int,
           split: str = "id") -> Batch:
    """`batch_size` sequences BOS sentence EOS PAD... of length `context_length`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    grammar, length = spec.task.grammar, spec.task.context_length
    cap = length - 2
    d, valid_B = sample_sentences(key, grammar, cap, batch_size)
    pos_L = jnp.arange(length)
    inside_BxL = (pos_L[None] >= 1) & (pos_L[None] <= d.length[:, None])
    shift = lambda x_BxC: jnp.pad(x_BxC, ((0, 0), (1, 1)))       # sentence at positions 1..cap
    tokens = jnp.where(inside_BxL, shift(d.words_C), PAD)
    tokens = jnp.where(pos_L[None] == 0, BOS, tokens)
    tokens = jnp.where(pos_L[None] == d.length[:, None] + 1, EOS, tokens)
    feats = token_features(grammar, shift(d.cat_C), shift(d.a_C), shift(d.b_C))
    feats = jnp.where(inside_BxL[..., None], feats, -1)
    mask = (pos_L[None] >= 1) & (pos_L[None] <= d.length[:, None] + 1) & valid_B[:, None]
    state_BxL, _ = jax.vmap(lambda x: recognise.run(grammar, x))(tokens)
    legal = jnp.asarray(recognise.legal_table(grammar))[state_BxL]
    return Batch(tokens.astype(jnp.int32), mask, feats.astype(jnp.int32), legal,
                 d.length, valid_B)


def constants(run_key: jax.Array, spec: Spec, hparams: dict) -> tuple:
    """No per-run constants: the grammar is fixed."""
    return ()


train_batch, eval_batch = streams.batches(sample, TRAIN_STREAM, {"id": EVAL_ID})


def feature_names(spec: Spec) -> list[str]:
    """Names of the `features_BxLxF` columns (what SAE probes on this task's activations see)."""
    return list(grammars.GRAMMARS[spec.task.grammar].features)


def feature_sizes(spec: Spec) -> list[int]:
    """How many values each feature column takes (-1 = outside the sentence, not counted)."""
    cap = spec.task.context_length - 2
    return {"dyck2": [cap // 2 + 1, 2, 2, 2],          # depth after a token <= cap / 2
            "expr": [cap + 1, 4, 4, 3],                 # depth < sentence length
            "english": [6, 2, 2]}[spec.task.grammar]   # Pro N Adj V Adv Conj


def points_per_sequence(spec: Spec) -> int:
    """A low estimate of the in-sentence positions of a sequence (mean sentence lengths are
    ~9 / 3.1 / 7.5 for dyck2 / expr / english at context 64), for SAEs on this task's
    activations: they draw enough sequences to fill a batch with sentence positions."""
    return min({"dyck2": 4, "expr": 2, "english": 4}[spec.task.grammar],
               spec.task.context_length - 1)


def vocab_size(spec: Spec) -> int:
    return grammars.vocab_size(spec.task.grammar)


def seq_len(spec: Spec) -> int:
    return spec.task.context_length
