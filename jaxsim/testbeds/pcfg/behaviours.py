"""Behaviours of a model trained on a formal language, for steering (`jaxsim steer`).

`nest` (Dyck-2): open new brackets rather than close the open ones. A prompt is a prefix of a
sentence of the grammar, cut after a token where at least C brackets are open and the sentence
could still be completed after C more openings (cut + 2C + depth <= context_length - 2, so both
continuations are prefixes of sentences the model was trained on). The matching continuation is
C opening brackets of uniformly drawn types; the non-matching one closes the C innermost open
brackets, innermost first (the only C-token closing that stays grammatical). Exact: the open
brackets are read off the prefix with a stack.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.testbed import Behaviour, Contrast
from jaxsim.testbeds.pcfg import task
from jaxsim.testbeds.pcfg.grammars import PAD

OPEN0, OPEN1, CLOSE0, CLOSE1 = 3, 4, 5, 6    # Dyck-2 token ids: o0 o1 c0 c1


def open_stack(tokens_L: jax.Array, depth: int) -> tuple[jax.Array, jax.Array]:
    """After each token of one Dyck-2 row: the types of the `depth` innermost open brackets,
    innermost first ([L, depth], -1 where fewer are open), and how many are open ([L])."""
    size = tokens_L.shape[0] + 1

    def step(carry, tok):
        stack_S, sp = carry
        opens = (tok == OPEN0) | (tok == OPEN1)
        closes = (tok == CLOSE0) | (tok == CLOSE1)
        stack_S = jnp.where(opens & (jnp.arange(size) == sp), tok - OPEN0, stack_S)
        sp = sp + opens.astype(jnp.int32) - closes.astype(jnp.int32)
        at = sp - 1 - jnp.arange(depth)
        top = jnp.where(at >= 0, stack_S[jnp.clip(at, 0, size - 1)], -1)
        return (stack_S, sp), (top, sp)

    _, (top_LxD, open_L) = jax.lax.scan(step, (jnp.full((size,), -1, jnp.int32), jnp.int32(0)),
                                        tokens_L)
    return top_LxD, open_L


def nest_contrast(key: jax.Array, consts, spec, hparams: dict, num: int,
                  continuation: int) -> Contrast:
    length, cap = spec.task.context_length - 1, spec.task.context_length - 2
    sent_key, cut_key, type_key = jax.random.split(key, 3)
    tokens_BxT = task.sample(sent_key, consts, spec, hparams, num).tokens_BxL[:, :length]
    top_BxTxC, open_BxT = jax.vmap(lambda t: open_stack(t, continuation))(tokens_BxT)
    pos_1xT = jnp.arange(length)[None]
    in_sentence = (tokens_BxT >= OPEN0)
    can_cut = in_sentence & (open_BxT >= continuation) & (
        pos_1xT + 2 * continuation + open_BxT <= cap)
    score = jnp.where(can_cut, jax.random.uniform(cut_key, can_cut.shape), -1.0)
    cut_B = jnp.argmax(score, axis=1)
    valid_B = can_cut.any(1)
    closers_BxC = CLOSE0 + jnp.take_along_axis(top_BxTxC, cut_B[:, None, None], 1)[:, 0]
    openers_BxC = OPEN0 + jax.random.bernoulli(type_key, 0.5, closers_BxC.shape).astype(jnp.int32)
    offset_BxT = pos_1xT - cut_B[:, None] - 1                  # index into the continuation
    target_BxT = (offset_BxT >= 0) & (offset_BxT < continuation) & valid_B[:, None]
    prompt_BxT = jnp.where(pos_1xT <= cut_B[:, None], tokens_BxT, PAD)
    pick = lambda cont_BxC: jnp.where(target_BxT, jnp.take_along_axis(  # noqa: E731
        cont_BxC, jnp.clip(offset_BxT, 0, continuation - 1), 1), prompt_BxT).astype(jnp.int32)
    return Contrast(pick(openers_BxC), pick(closers_BxC), target_BxT, valid_B)


def _check_nest(spec, continuation: int) -> str | None:
    if spec.task.grammar != "dyck2":
        return f"behaviour 'nest' is defined for task.grammar=dyck2, not {spec.task.grammar}"
    if 3 * continuation + 1 > spec.task.context_length - 2:
        return (f"continuation={continuation} does not fit a Dyck-2 sentence of at most "
                f"{spec.task.context_length - 2} tokens with that many brackets open")
    return None


BEHAVIOURS = {"nest": Behaviour(
    nest_contrast, "Dyck-2: open new brackets rather than close the innermost open ones",
    continuation=2, check=_check_nest)}
