"""Grammaticality of a trained model's own samples (task pcfg), at every saved checkpoint.

For one run and a stack of its checkpoints (pure; vmapped over runs by the caller, lax.map over
checkpoints): draw `num_samples` sequences from the model at temperature 1 (BOS, then one token
per step under `lax.scan`, the full context recomputed each step: contexts are short), cut each
at its first EOS, and check it with the grammar's exact jax recogniser (`tasks/recognise.py`,
tested against the Earley parser in `analysis/earley.py`). Per checkpoint:
- `grammatical`: share of samples that are BOS + a sentence + EOS;
- `finished`: share that emitted EOS within the context;
- `legal_tokens`: share of sampled tokens (up to the first EOS) that were legal continuations of
  a grammatical prefix, i.e. how far into a sample the model stays inside the language;
- `mean_length`: mean sentence length of the grammatical samples, beside `grammar_mean_length`,
  the same on exact samples of the grammar under the same length cap.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsim.config import Spec
from jaxsim.testbeds.pcfg import task as pcfg
from jaxsim.testbeds.pcfg import recognise as recognise
from jaxsim.testbeds.pcfg.grammars import BOS
from jaxsim.testbeds.pcfg.grammars import EOS
from jaxsim.training.loop import model_of

SAMPLE_STREAM, GRAMMAR_STREAM = 3000, 3001
METRICS = ("grammatical", "finished", "legal_tokens", "mean_length")


def generate(params, spec: Spec, key: jax.Array, num_samples: int) -> jax.Array:
    """[B, L] model samples at temperature 1: BOS then context_length - 1 sampled tokens."""
    length = spec.task.context_length
    model = model_of(spec)
    start = jnp.zeros((num_samples, length), jnp.int32).at[:, 0].set(BOS)

    def step(tokens_BxL, t):
        logits_BxV = model.apply({"params": params}, tokens_BxL[:, :-1])[:, t]
        nxt = jax.random.categorical(jax.random.fold_in(key, t), logits_BxV).astype(jnp.int32)
        return jax.lax.dynamic_update_slice(tokens_BxL, nxt[:, None], (0, t + 1)), None

    tokens, _ = jax.lax.scan(step, start, jnp.arange(length - 1))
    return tokens


def judge(grammar: str, tokens_BxL: jax.Array) -> dict[str, jax.Array]:
    """Grammaticality statistics of sequences (module docstring); tokens after EOS ignored."""
    cut = recognise.truncate_after_eos(tokens_BxL)
    states_BxL, ok_B = jax.vmap(lambda x: recognise.run(grammar, x))(cut)
    has_eos = (tokens_BxL == EOS).any(1)
    length_B = jnp.where(has_eos, jnp.argmax(tokens_BxL == EOS, axis=1) - 1, -1)
    legal_VxS = jnp.asarray(recognise.legal_table(grammar))
    legal_BxT = legal_VxS[states_BxL[:, :-1], cut[:, 1:]]          # token t+1 after prefix t
    pos = jnp.arange(tokens_BxL.shape[1] - 1)[None]
    upto = jnp.where(has_eos, length_B + 1, tokens_BxL.shape[1] - 1)[:, None]
    counted = (pos < upto).astype(jnp.float32)
    okf = ok_B.astype(jnp.float32)
    return {"grammatical": okf.mean(), "finished": has_eos.astype(jnp.float32).mean(),
            "legal_tokens": jnp.sum(legal_BxT * counted) / jnp.maximum(counted.sum(), 1.0),
            "mean_length": jnp.sum(length_B * okf) / jnp.maximum(okf.sum(), 1.0)}


def analyze_run(params_S, run_key: jax.Array, spec: Spec, hparams: dict,
                num_samples: int) -> dict[str, jax.Array]:
    """Per checkpoint [S]: the METRICS; plus the last checkpoint's samples [B, L] (and whether
    each is grammatical), the
    grammar's exact lengths [B] and `grammar_mean_length` (scalar) for comparison."""
    key = jax.random.fold_in(run_key, SAMPLE_STREAM)

    def one(params):
        tokens = generate(params, spec, key, num_samples)
        return judge(spec.task.grammar, tokens), tokens

    stats, tokens_SxBxL = jax.lax.map(one, params_S)
    truth = pcfg.sample(jax.random.fold_in(run_key, GRAMMAR_STREAM), (), spec, hparams,
                        num_samples)
    _, final_ok_B = jax.vmap(lambda x: recognise.run(spec.task.grammar, x))(
        recognise.truncate_after_eos(tokens_SxBxL[-1]))
    return {**stats, "samples": tokens_SxBxL[-1], "samples_grammatical": final_ok_B,
            "grammar_lengths": truth.length_B,
            "grammar_mean_length": truth.length_B.astype(jnp.float32).mean()}
