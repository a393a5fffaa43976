"""GPT decoder: shapes, causality, tied embeddings, RoPE, jit == eager."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim import models
from jaxsim.config import ModelConfig
from jaxsim.models.transformer import rope


def _model(positional="learned"):
    cfg = ModelConfig(num_layers=2, d_model=16, num_heads=2, d_mlp=32, positional=positional)
    return models.build(cfg, vocab_size=7, max_length=12)


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_shapes_and_causality(positional):
    model = _model(positional)
    tokens = jax.random.randint(jax.random.key(0), (3, 12), 0, 7)
    params = model.init(jax.random.key(1), tokens)["params"]
    logits, acts = model.apply({"params": params}, tokens, return_activations=True)
    chex.assert_shape(logits, (3, 12, 7))
    chex.assert_shape(acts["attn0"], (3, 2, 12, 12))
    np.testing.assert_allclose(np.triu(np.asarray(acts["attn1"]), 1), 0.0, atol=1e-7)
    changed = tokens.at[:, 8].set((tokens[:, 8] + 1) % 7)
    logits2 = model.apply({"params": params}, changed)
    np.testing.assert_allclose(logits[:, :8], logits2[:, :8], atol=1e-5)
    assert not np.allclose(logits[:, 8:], logits2[:, 8:])
    assert ("pos_embed" in params) == (positional == "learned")


def test_embeddings_are_tied():
    model = _model()
    tokens = jnp.zeros((1, 12), jnp.int32)
    params = model.init(jax.random.key(0), tokens)["params"]
    vocab_params = [p for p in jax.tree.leaves(params) if 7 in p.shape]
    assert len(vocab_params) == 1  # only the input embedding has a vocabulary axis


def test_rope_is_a_rotation_that_encodes_relative_position():
    x = jax.random.normal(jax.random.key(0), (1, 10, 1, 8))
    y = rope(x)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    q = jnp.broadcast_to(x[:, :1], x.shape)
    k = jnp.broadcast_to(x[:, 1:2], x.shape)
    dots = jnp.einsum("bthd,bthd->t", rope(q)[:, 1:], rope(k)[:, :-1])
    np.testing.assert_allclose(dots, dots[0], rtol=1e-4)  # depends on offset only


def test_jit_equals_eager():
    model = _model("rope")
    tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 7)
    params = model.init(jax.random.key(1), tokens)["params"]
    eager = model.apply({"params": params}, tokens)
    jitted = jax.jit(model.apply)({"params": params}, tokens)
    np.testing.assert_allclose(eager, jitted, atol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters_and_matches_float32():
    """model.compute_dtype=bfloat16: activations in bfloat16, parameters, logits and the loss in
    float32, and the same function as the float32 model up to bfloat16 rounding."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsim import config
    from jaxsim.training import loop

    outs = {}
    for dtype in ("float32", "bfloat16"):
        spec = config.spec_of(config.from_dict({"model": {"compute_dtype": dtype, "d_model": 32,
                                                          "d_mlp": 64}}))
        model = loop.model_of(spec)
        tokens = jax.random.randint(jax.random.key(1), (4, 63), 0, 10)
        params = model.init(jax.random.key(0), tokens)["params"]
        assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
        logits, acts = model.apply({"params": params}, tokens, return_activations=True)
        assert logits.dtype == jnp.float32 and acts["block0"].dtype == jnp.dtype(dtype)
        outs[dtype] = np.asarray(jax.nn.log_softmax(logits))
    np.testing.assert_allclose(outs["bfloat16"], outs["float32"], atol=0.05)
    assert not np.array_equal(outs["bfloat16"], outs["float32"])


def test_bfloat16_is_for_the_gpt_only():
    import pytest

    from jaxsim import config

    with pytest.raises(config.ConfigError, match="model.compute_dtype=bfloat16 applies to model.name=gpt"):
        config.from_dict({"task": {"name": "matrix_completion", "matrix_size": 4, "rank": 1},
                          "model": {"name": "encoder", "compute_dtype": "bfloat16"}})
