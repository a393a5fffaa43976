"""Exact recognisers of the three languages in jax: prefix state and grammaticality per sequence.

`run(grammar, tokens_L)` reads BOS w_1 .. w_n EOS PAD... left to right under `lax.scan` and
returns the recogniser state after each token and whether the whole sequence is BOS + a sentence
+ EOS + only PAD after it. `legal_table(grammar)[state]` is the set of tokens that can follow the
prefix (a word that keeps the prefix extendable to a sentence, EOS when the prefix is a sentence,
PAD after EOS; the length cap is ignored): an exact "legal next-token" target for a model.

- dyck2: a stack of open bracket types; states start, depth 0 (non-empty), innermost type 0/1.
- expr (prefix notation): the number of expressions still needed, 1 after BOS; a word of arity a
  (digit 0, unary 1, binary 2, ternary 3) needs one and adds a.
- english: the language is regular (NP = unit (Conj unit)*, unit = Pro | N | Adj N; VP = V [NP]
  followed by Adv or Conj VP, with NP conjunction inside objects): a 10-state automaton on
  categories.
States past the language: `done` (after EOS) and `dead` (an illegal token was read). The tests
check these recognisers against a plain-Python Earley parser of the grammar rules.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsim.testbeds.pcfg import grammars as grammars
from jaxsim.testbeds.pcfg.grammars import BOS
from jaxsim.testbeds.pcfg.grammars import EOS
from jaxsim.testbeds.pcfg.grammars import PAD

NUM_STATES = {"dyck2": 6, "expr": 4, "english": 12}
DONE = {"dyck2": 4, "expr": 2, "english": 10}

# english automaton: state -> {category: next state}; accepting states take EOS.
PRO, N, ADJ, V, ADV, CONJ = range(6)
_UNIT = {PRO: 2, N: 2, ADJ: 1}
_OBJECT = {PRO: 6, N: 6, ADJ: 5}
ENGLISH_DFA = {0: _UNIT, 1: {N: 2}, 2: {CONJ: 3, V: 4}, 3: _UNIT,
               4: {**_OBJECT, ADV: 7, CONJ: 8}, 5: {N: 6}, 6: {CONJ: 9, ADV: 7},
               7: {ADV: 7, CONJ: 8}, 8: {V: 4}, 9: {**_OBJECT, V: 4}}
ENGLISH_ACCEPT = (4, 6, 7)


@functools.lru_cache(maxsize=None)
def english_transitions() -> np.ndarray:
    """[12, V] next state of the english automaton (11 = dead)."""
    cat = grammars.category_of_token("english")
    out = np.full((12, cat.size), 11, np.int32)
    for s, arcs in ENGLISH_DFA.items():
        for c, nxt in arcs.items():
            out[s, cat == c] = nxt
        if s in ENGLISH_ACCEPT:
            out[s, EOS] = 10
    out[10, PAD] = 10
    return out


@functools.lru_cache(maxsize=None)
def legal_table(grammar: str) -> np.ndarray:
    """[states, V] bool: tokens that may follow a prefix in each recogniser state."""
    v = grammars.vocab_size(grammar)
    cat = grammars.category_of_token(grammar)
    words = cat >= 0
    table = np.zeros((NUM_STATES[grammar], v), bool)
    table[DONE[grammar], PAD] = True
    if grammar == "english":
        return english_transitions() != 11
    if grammar == "dyck2":      # categories o0 o1 c0 c1
        opens = (cat == 0) | (cat == 1)
        table[:4] = opens
        table[1, EOS] = True
        table[2] |= cat == 2
        table[3] |= cat == 3
    else:
        table[0] = words
        table[1, EOS] = True
    return table


def _dyck_step(cat, carry, tok):
    stack_L, sp, started, ended, ok = carry
    top = stack_L[jnp.maximum(sp - 1, 0)]
    is_open, is_close = (tok >= 3) & (cat[tok] < 2), (tok >= 3) & (cat[tok] >= 2)
    good = jnp.where(ended, tok == PAD,
                     jnp.where(tok == EOS, (sp == 0) & started,
                               is_open | (is_close & (sp > 0) & (top == cat[tok] - 2))))
    stack_L = jnp.where(is_open & ~ended & (jnp.arange(stack_L.shape[0]) == sp), cat[tok], stack_L)
    sp = sp + jnp.where(ended, 0, is_open.astype(jnp.int32) - is_close.astype(jnp.int32))
    ok, ended, started = ok & good, ended | (tok == EOS), started | is_open
    inner = stack_L[jnp.maximum(sp - 1, 0)]
    state = jnp.where(~ok, 5, jnp.where(ended, 4, jnp.where(
        sp > 0, 2 + inner, started.astype(jnp.int32))))
    return (stack_L, sp, started, ended, ok), state


def _expr_step(cat, carry, tok):
    need, ended, ok = carry
    word = tok >= 3
    good = jnp.where(ended, tok == PAD, jnp.where(tok == EOS, need == 0, word & (need > 0)))
    need = need + jnp.where(word & ~ended, cat[tok] - 1, 0)
    ok, ended = ok & good, ended | (tok == EOS)
    state = jnp.where(~ok, 3, jnp.where(ended, 2, jnp.where(need > 0, 0, 1)))
    return (need, ended, ok), state


def _english_step(trans, carry, tok):
    state = trans[carry, tok]
    return state, state


def run(grammar: str, tokens_L: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[L] state after each token, and whether the sequence is BOS sentence EOS PAD*."""
    cat = jnp.asarray(grammars.category_of_token(grammar))
    rest = tokens_L[1:]
    if grammar == "dyck2":
        init = (jnp.zeros(tokens_L.shape, jnp.int32), jnp.int32(0), jnp.bool_(False),
                jnp.bool_(False), jnp.bool_(True))
        step, start, dead = functools.partial(_dyck_step, cat), 0, 5
    elif grammar == "expr":
        init = (jnp.int32(1), jnp.bool_(False), jnp.bool_(True))
        step, start, dead = functools.partial(_expr_step, cat), 0, 3
    else:
        init = jnp.int32(0)
        step, start, dead = functools.partial(_english_step,
                                              jnp.asarray(english_transitions())), 0, 11
    _, states = jax.lax.scan(step, init, rest)
    first = jnp.where(tokens_L[0] == BOS, start, dead)
    # a bad first token kills every later state
    states = jnp.where(tokens_L[0] == BOS, states, dead)
    states_L = jnp.concatenate([first[None], states])
    return states_L, states_L[-1] == DONE[grammar]


def truncate_after_eos(tokens_BxL: jax.Array) -> jax.Array:
    """Model samples: everything after the first EOS becomes PAD."""
    seen = jnp.cumsum(tokens_BxL == EOS, axis=1) - (tokens_BxL == EOS)
    return jnp.where(seen > 0, PAD, tokens_BxL)
