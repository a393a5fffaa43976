"""A plain-Python Earley recogniser: the host-side grammaticality checker for any of the grammars.

Written apart from the sampler and the jax recognisers (`tasks/recognise.py`), from the rules
alone, so the tests can check one against the other. Terminals are category names; a word is
mapped to its category first. No epsilon rules (none of our grammars has one) and every
nonterminal derives some sentence, so a prefix is extendable to a sentence exactly when the
chart after its last word is non-empty.
"""
from __future__ import annotations

from jaxsim.testbeds.pcfg import grammars as grammars
from jaxsim.testbeds.pcfg.grammars import BOS
from jaxsim.testbeds.pcfg.grammars import EOS


def _chart(rules: dict, start: str, words: list[str]) -> list[set]:
    """Earley item sets: items (lhs, rhs, dot, origin), rhs a tuple of symbols."""
    prods = {lhs: [tuple(rhs.split()) for rhs, _ in alts] for lhs, alts in rules.items()}
    chart = [set() for _ in range(len(words) + 1)]
    chart[0] = {(start, rhs, 0, 0) for rhs in prods[start]}
    for i in range(len(words) + 1):
        agenda = list(chart[i])
        while agenda:
            lhs, rhs, dot, origin = agenda.pop()
            if dot < len(rhs) and rhs[dot] in prods:            # predict
                new = [(rhs[dot], r, 0, i) for r in prods[rhs[dot]]]
                # a nonterminal completed at i with origin i would need epsilon: none here
            elif dot < len(rhs):                                 # scan
                if i < len(words) and words[i] == rhs[dot]:
                    chart[i + 1].add((lhs, rhs, dot + 1, origin))
                new = []
            else:                                                # complete
                new = [(l2, r2, d2 + 1, o2) for (l2, r2, d2, o2) in list(chart[origin])
                       if d2 < len(r2) and r2[d2] == lhs]
            for item in new:
                if item not in chart[i]:
                    chart[i].add(item)
                    agenda.append(item)
    return chart


def accepts(rules: dict, start: str, words: list[str]) -> bool:
    """Whether the category sequence `words` is a sentence of the grammar."""
    chart = _chart(rules, start, words)
    return any(lhs == start and dot == len(rhs) and origin == 0
               for lhs, rhs, dot, origin in chart[-1])


def viable(rules: dict, start: str, words: list[str]) -> bool:
    """Whether `words` is a prefix of some sentence."""
    return bool(_chart(rules, start, words)[-1])


def categories(grammar: str, tokens) -> list[str] | None:
    """Word tokens -> category names (None if a token is not a word)."""
    names = list(grammars.GRAMMARS[grammar].categories)
    cat = grammars.category_of_token(grammar)
    out = [names[cat[t]] if 0 <= t < cat.size and cat[t] >= 0 else None for t in tokens]
    return None if None in out else out


def sentence_of(tokens) -> list[int] | None:
    """The words between BOS and the first EOS (None if there is no BOS or no EOS)."""
    tokens = [int(t) for t in tokens]
    if not tokens or tokens[0] != BOS or EOS not in tokens:
        return None
    return tokens[1:tokens.index(EOS)]


def is_grammatical(grammar: str, tokens) -> bool:
    """BOS, a sentence of the grammar, then EOS (whatever follows the first EOS is ignored)."""
    g = grammars.GRAMMARS[grammar]
    sentence = sentence_of(tokens)
    cats = None if sentence is None else categories(grammar, sentence)
    return cats is not None and accepts(g.rules, g.start, cats)
