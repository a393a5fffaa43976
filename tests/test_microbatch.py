"""`train.microbatch_size`: the batch split into gradient passes gives the whole batch's loss and
gradient (the definition: one pass over the whole batch), for every objective, including the
masked one whose normaliser differs between microbatches and a batch with shared fields."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim import config, testbeds, training
from jaxsim.training import loop

from conftest import tiny_raw

CASES = {
    "markov_mixture": ({}, {}, 4),
    "pcfg": ({"name": "pcfg", "context_length": 24}, {}, 2),
    "matrix_completion": ({"name": "matrix_completion", "matrix_size": 4, "rank": 1},
                          {"name": "encoder"}, 4),
    "sim": ({"name": "sim", "dim": 8, "num_concepts": 3}, {"name": "mlp"}, 8),
}


def _setup(task: dict, model: dict, microbatch: int, batch_size: int = 16):
    raw = tiny_raw(task=task, model=model,
                   train={"batch_size": batch_size, "microbatch_size": microbatch})
    cfg = config.from_dict(raw)
    spec, hp = config.spec_of(cfg), training.as_arrays(config.hparams_of(cfg))
    key = jax.random.key(7)
    params = training.init(key, spec, hp)["params"]
    module = testbeds.get(spec.task.name)
    batch = module.train_batch(module.constants(key, spec, hp), key, jnp.int32(3), spec, hp)
    return spec, params, batch


@pytest.mark.parametrize("name", list(CASES))
def test_microbatched_gradient_is_the_whole_batch_gradient(name):
    task, model, size = CASES[name]
    spec, params, batch = _setup(task, model, size)
    whole_spec, _, _ = _setup(task, model, 0)
    loss, grads = jax.jit(lambda p, b: loop.value_and_grad(p, spec, b))(params, batch)
    ref_loss, ref_grads = jax.value_and_grad(loop.loss_fn)(params, whole_spec, batch)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-6)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6 * float(jnp.abs(r).max()))


def test_masked_loss_weights_microbatches_by_their_targets():
    """pcfg sentences differ in length, so an unweighted mean of microbatch losses is not the
    batch's loss: the weighting is what makes the two agree."""
    task, model, size = CASES["pcfg"]
    spec, params, batch = _setup(task, model, size)
    parts, n = loop.microbatches(batch, size)
    targets = np.asarray(batch.loss_mask_BxL[:, 1:].reshape(n, -1).sum(1))
    assert len(set(targets.tolist())) > 1, targets  # the case the weighting exists for
    each = [loop.loss_fn(params, spec, batch._replace(**{k: v[i] for k, v in parts.items()}))
            for i in range(n)]
    whole = loop.loss_fn(params, spec, batch)
    assert abs(float(np.mean(each)) - float(whole)) > 1e-4
    np.testing.assert_allclose(np.dot(each, targets) / targets.sum(), whole, rtol=1e-5)


def test_shared_fields_are_not_split():
    """sim's batch carries the run's rotation and probes: one copy serves every microbatch."""
    task, model, size = CASES["sim"]
    _, _, batch = _setup(task, model, size)
    parts, n = loop.microbatches(batch, size)
    assert n == 2 and set(parts) == {"x_BxD", "z_BxD", "cluster_B"}
    assert parts["x_BxD"].shape == (2, 8, 8)


def test_training_with_microbatches_follows_the_same_path():
    """A short run: the same losses up to float summation order."""
    out = []
    for size in (0, 4):
        cfg = config.from_dict(tiny_raw(train={"batch_size": 16, "microbatch_size": size}))
        spec, hp = config.spec_of(cfg), training.as_arrays(config.hparams_of(cfg))
        _, metrics = jax.jit(training.train, static_argnums=1)(jax.random.key(0), spec, hp)
        out.append(metrics)
    for name in out[0]:
        np.testing.assert_allclose(out[1][name], out[0][name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sections, needle", [
    ({"train": {"batch_size": 16, "microbatch_size": 5}},
     "train.microbatch_size (5) must divide train.batch_size (16)"),
    ({"task": {"name": "concept_geometry"}, "model": {"name": "sae"},
      "train": {"microbatch_size": 4}},
     "train.microbatch_size applies to models trained through a task objective"),
])
def test_bad_microbatch_size_is_one_clear_error(sections, needle):
    with pytest.raises(config.ConfigError, match=None) as err:
        config.from_dict(tiny_raw(**sections))
    assert needle in str(err.value)
