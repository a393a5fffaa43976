"""Behaviours of a model trained on a mixture of Markov chains, for steering (`jaxsim steer`).

`chain`: continue as training chain 0 rather than as training chain 1. A prompt is the first
context_length - 1 - C tokens of a sequence from the run's own training mixture; both
continuations (C tokens) start from the prompt's last state, one rolled out with chain 0's
transition matrix and one with chain 1's, from the same uniforms (common random numbers, so the
two differ only where the chains do). Exact: the chains are the run's own constants.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.testbed import Behaviour, Contrast
from jaxsim.testbeds.markov_mixture import task

MATCH_CHAIN, NONMATCH_CHAIN = 0, 1


def continue_chain(transition_KxK: jax.Array, start_B: jax.Array, u_BxC: jax.Array) -> jax.Array:
    """[B, C] states x_1..x_C with x_{t+1} ~ T[x_t] from x_0 = start, by inverse CDF on `u`."""
    def advance(x_B, u_B):
        nxt = task.inverse_cdf(transition_KxK[x_B], u_B)
        return nxt, nxt

    _, rest_CxB = jax.lax.scan(advance, start_B, u_BxC.T)
    return rest_CxB.T


def chain_contrast(key: jax.Array, consts: task.Constants, spec, hparams: dict, num: int,
                   continuation: int) -> Contrast:
    length = spec.task.context_length - 1          # the positions the model was trained on
    prompt_len = length - continuation
    prompt_key, cont_key = jax.random.split(key)
    prompts_BxP = task.sample(prompt_key, consts, spec, hparams, num, "id").tokens_BxL[
        :, :prompt_len]
    u_BxC = jax.random.uniform(cont_key, (num, continuation))
    start_B = prompts_BxP[:, -1]
    match = continue_chain(consts.bank_NxKxK[MATCH_CHAIN], start_B, u_BxC)
    nonmatch = continue_chain(consts.bank_NxKxK[NONMATCH_CHAIN], start_B, u_BxC)
    target_T = jnp.arange(length) >= prompt_len
    return Contrast(jnp.concatenate([prompts_BxP, match], 1).astype(jnp.int32),
                    jnp.concatenate([prompts_BxP, nonmatch], 1).astype(jnp.int32),
                    jnp.broadcast_to(target_T, (num, length)),
                    jnp.ones((num,), bool))


def _check_chain(spec, continuation: int) -> str | None:
    if spec.task.num_chains < 2:
        return (f"behaviour 'chain' contrasts training chains 0 and 1; this group has "
                f"task.num_chains={spec.task.num_chains}")
    if continuation > spec.task.context_length - 2:
        return (f"continuation={continuation} leaves no prompt: it must be <= "
                f"task.context_length - 2 = {spec.task.context_length - 2}")
    return None


BEHAVIOURS = {"chain": Behaviour(
    chain_contrast, "continue as training chain 0 rather than as training chain 1, from a "
    "prompt of the run's own training mixture", continuation=8, check=_check_chain)}
