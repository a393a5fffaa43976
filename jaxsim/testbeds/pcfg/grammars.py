"""The three probabilistic grammars of Menon, Shrivastava, Krueger, Lubana (2024), as data.

Each grammar is a start symbol, rules (nonterminal -> [(right-hand side, probability)]) and
lexical categories (category -> number of words). A category is a preterminal whose word is drawn
*uniformly* (the reference draws lexical probabilities from a Dirichlet with alpha = 1e5, i.e.
within ~0.3 % of uniform; we use the uniform limit so the ground truth is exact and testable).

Token ids: 0 = PAD, 1 = BOS, 2 = EOS, then the words, category by category in `categories`
order. `tables(name)` compiles a grammar into the numpy arrays the vectorised sampler reads.

Per-token context fields. The sampler carries two integers (a, b) with every pending symbol;
a child of production p at right-hand-side slot s gets a = a_parent + INC[p, s] and
b = SET[p, s] if SET[p, s] >= 0 else b_parent. Each grammar chooses INC/SET so that (a, b, the
token's category) give its named features (`FEATURES`):
- dyck2: a = bracket depth after the token, b = type of the innermost open bracket after it
  (-1 when none); features depth, bracket_type, is_open, innermost_type.
- expr: a = number of operator ancestors of the token's (sub)expression, b = 4 x parent
  operator's arity + argument position (-1 at the root); features depth, arity (0 for a digit),
  parent_arity (0 at the root), arg_position (-1 at the root).
- english: a = 1 inside the subject NP, b = 0 if the token's parent is an NP, 1 if a VP;
  features pos (category index: Pro N Adj V Adv Conj), in_subject, phrase.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

PAD, BOS, EOS = 0, 1, 2
NUM_SPECIAL = 3


class Grammar(NamedTuple):
    start: str
    rules: dict          # nonterminal -> list of (rhs string, probability)
    categories: dict     # category -> number of words (in token order)
    inc: dict            # (nonterminal, rule index) -> per-slot depth increments
    set: dict            # (nonterminal, rule index) -> per-slot b values (-1 = inherit)
    features: tuple      # names of the feature columns


DYCK2 = Grammar(
    start="S",
    rules={"S": [("S S", 0.30), ("Brack0", 0.35), ("Brack1", 0.35)],
           "Brack0": [("o0 S c0", 0.5), ("o0 c0", 0.5)],
           "Brack1": [("o1 S c1", 0.5), ("o1 c1", 0.5)]},
    categories={"o0": 1, "o1": 1, "c0": 1, "c1": 1},
    inc={("Brack0", 0): (1, 1, 0), ("Brack0", 1): (1, 0), ("Brack1", 0): (1, 1, 0),
         ("Brack1", 1): (1, 0)},
    set={("Brack0", 0): (0, 0, -1), ("Brack0", 1): (0, -1), ("Brack1", 0): (1, 1, -1),
         ("Brack1", 1): (1, -1)},
    features=("depth", "bracket_type", "is_open", "innermost_type"))

EXPR = Grammar(
    start="S",
    rules={"S": [("Expr", 1.0)],
           "Expr": [("OpExpr", 0.4), ("Digit", 0.6)],
           "OpExpr": [("UnOp Expr", 0.33), ("BinOp Expr Expr", 0.33),
                      ("TernOp Expr Expr Expr", 0.34)]},
    categories={"Digit": 10, "UnOp": 3, "BinOp": 3, "TernOp": 3},
    inc={("OpExpr", 0): (0, 1), ("OpExpr", 1): (0, 1, 1), ("OpExpr", 2): (0, 1, 1, 1)},
    set={("OpExpr", 0): (-1, 4), ("OpExpr", 1): (-1, 8, 9), ("OpExpr", 2): (-1, 12, 13, 14)},
    features=("depth", "arity", "parent_arity", "arg_position"))

P_CONJ_NP, P_CONJ_VP = 0.25, 0.15     # the paper's main English run
_ENGLISH_RULES = {
    "S": [("NP VP", 1.0)],
    "NP": [("Pro", 0.2), ("N", 0.2), ("NP Conj NP", P_CONJ_NP), ("Adj N", 0.6 - P_CONJ_NP)],
    "VP": [("VP Conj VP", P_CONJ_VP), ("VP Adv", 0.6 - P_CONJ_VP), ("V NP", 0.2), ("V", 0.2)]}
ENGLISH = Grammar(
    start="S",
    rules=_ENGLISH_RULES,
    categories={"Pro": 10, "N": 10, "Adj": 10, "V": 10, "Adv": 10, "Conj": 2},
    inc={("S", 0): (1, 0)},
    set={(lhs, i): (phrase,) * len(rhs.split()) for lhs, phrase in (("NP", 0), ("VP", 1))
         for i, (rhs, _) in enumerate(_ENGLISH_RULES[lhs])},
    features=("pos", "in_subject", "phrase"))

GRAMMARS = {"dyck2": DYCK2, "expr": EXPR, "english": ENGLISH}


def vocab_size(name: str) -> int:
    return NUM_SPECIAL + sum(GRAMMARS[name].categories.values())


def category_of_token(name: str) -> np.ndarray:
    """[V] category index of each token id (-1 for PAD, BOS, EOS)."""
    out = [-1] * NUM_SPECIAL
    for c, n in enumerate(GRAMMARS[name].categories.values()):
        out += [c] * n
    return np.array(out, np.int32)


class Tables(NamedTuple):
    """A grammar compiled for the sampler. Symbols: nonterminals 0..N-1, categories N..N+C-1."""
    num_nonterminals: int
    start: int
    nt_prods_NxK: np.ndarray     # production ids of each nonterminal (padded with its first)
    nt_probs_NxK: np.ndarray     # their probabilities (0 on padding)
    rhs_PxR: np.ndarray          # right-hand-side symbols (-1 padding)
    rhs_len_P: np.ndarray
    inc_PxR: np.ndarray
    set_PxR: np.ndarray
    cat_start_C: np.ndarray      # first token id of each category
    cat_size_C: np.ndarray


@functools.lru_cache(maxsize=None)
def tables(name: str) -> Tables:
    g = GRAMMARS[name]
    nts, cats = list(g.rules), list(g.categories)
    sym = {s: i for i, s in enumerate(nts + cats)}
    prods = [(lhs, i, rhs.split(), p) for lhs, alts in g.rules.items()
             for i, (rhs, p) in enumerate(alts)]
    width = max(len(r) for _, _, r, _ in prods)
    most = max(len(a) for a in g.rules.values())
    nt_prods = np.zeros((len(nts), most), np.int32)
    nt_probs = np.zeros((len(nts), most), np.float32)
    rhs = np.full((len(prods), width), -1, np.int32)
    inc = np.zeros((len(prods), width), np.int32)
    sets = np.full((len(prods), width), -1, np.int32)
    for p, (lhs, i, r, prob) in enumerate(prods):
        n = nts.index(lhs)
        nt_prods[n, i], nt_probs[n, i] = p, prob
        if i == 0:
            nt_prods[n, len(g.rules[lhs]):] = p
        rhs[p, :len(r)] = [sym[s] for s in r]
        inc[p, :len(r)] = g.inc.get((lhs, i), (0,) * len(r))
        sets[p, :len(r)] = g.set.get((lhs, i), (-1,) * len(r))
    sizes = np.array(list(g.categories.values()), np.int32)
    starts = NUM_SPECIAL + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    return Tables(len(nts), sym[g.start], nt_prods, nt_probs, rhs,
                  (rhs >= 0).sum(1).astype(np.int32), inc, sets, starts, sizes)


def production_names(name: str) -> list[str]:
    """'LHS -> RHS' of every production, in the sampler's production-id order."""
    return [f"{lhs} -> {rhs}" for lhs, alts in GRAMMARS[name].rules.items() for rhs, _ in alts]
