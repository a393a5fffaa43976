"""One run: determinism, learning against the oracle, vmapped run == run alone."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxsim import config, training

from conftest import tiny_raw

_train = jax.jit(training.train, static_argnums=1)
_train_many = jax.jit(jax.vmap(training.train, (0, None, 0)), static_argnums=1)


def _spec_hp(**sections):
    cfg = config.from_dict(tiny_raw(**sections))
    return config.spec_of(cfg), config.hparams_of(cfg)


def test_same_key_is_bit_identical_and_keys_differ():
    spec, hp = _spec_hp()
    hp = training.as_arrays(hp)
    s1, m1 = _train(jax.random.key(0), spec, hp)
    s2, m2 = _train(jax.random.key(0), spec, hp)
    for a, b in zip(jax.tree.leaves((s1, m1)), jax.tree.leaves((s2, m2))):
        np.testing.assert_array_equal(a, b)
    _, m3 = _train(jax.random.key(1), spec, hp)
    assert not np.array_equal(m1["train_loss"], m3["train_loss"])
    assert m1["train_loss"].shape == (2,)
    assert int(s1["step"]) == 20


def test_single_chain_is_learned_to_the_oracle():
    """With one training chain the Bayes-optimal predictor is T itself: loss -> oracle."""
    spec, hp = _spec_hp(task={"num_chains": 1, "num_states": 4},
                        train={"steps": 300, "eval_every": 100, "lr": 1e-2, "batch_size": 16})
    _, m = _train(jax.random.key(0), spec, training.as_arrays(hp))
    gap = np.asarray(m["eval_loss_id"] - m["oracle_loss_id"])
    assert gap[-1] < 0.05, gap
    assert gap[-1] < gap[0]
    assert (gap > -0.05).all()  # no model beats the true chain on held-out data (up to noise)


def test_vmapped_runs_equal_runs_alone():
    spec, _ = _spec_hp(task={"num_chains": 16})
    # N = 4 alone is the tiny spec test_same_key_is_bit_identical_and_keys_differ compiles
    cfgs = [config.from_dict(tiny_raw(task={"num_chains": n}, train={"lr": lr}))
            for n, lr in [(4, 1e-3), (16, 3e-3), (5, 3e-3)]]
    seeds = jnp.array([0, 1, 2])
    stacked = jax.tree.map(lambda *v: jnp.stack(v),
                           *[training.as_arrays(config.hparams_of(c)) for c in cfgs])
    _, many = _train_many(jax.vmap(jax.random.key)(seeds), spec, stacked)
    for i, c in enumerate(cfgs):
        alone_spec = config.spec_of(c)  # bank of exactly N chains
        _, alone = _train(jax.random.key(int(seeds[i])), alone_spec,
                          training.as_arrays(config.hparams_of(c)))
        for name in alone:
            np.testing.assert_allclose(many[name][i], alone[name], rtol=1e-5, atol=1e-5)


def test_hyperparameter_only_runs_share_init_and_data():
    spec, hp = _spec_hp()
    init = jax.jit(training.init, static_argnums=1)   # one compile (op by op: ~3x the CPU)
    a = init(jax.random.key(3), spec, training.as_arrays(hp))
    hp2 = dict(hp, train={**hp["train"], "lr": 0.1})
    b = init(jax.random.key(3), spec, training.as_arrays(hp2))
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])):
        np.testing.assert_array_equal(x, y)
