"""The Markov-mixture generator against its ground truth, checked statistically in numpy."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim import config, training
from jaxsim.testbeds.markov_mixture import task as mm

from conftest import tiny_raw


def _setup(num_chains=4, bank=None, weights="uniform", length=16, batch=8):
    cfg = config.from_dict(tiny_raw(task={"num_chains": num_chains, "weights": weights,
                                          "context_length": length},
                                    train={"batch_size": batch}))
    spec = config.spec_of(cfg)
    if bank is not None:
        spec = config.merge_specs([spec, config.spec_of(config.from_dict(
            tiny_raw(task={"num_chains": bank, "weights": weights, "context_length": length},
                     train={"batch_size": batch})))])
    return spec, training.as_arrays(config.hparams_of(cfg))


def test_batch_shapes_and_dtypes():
    spec, hp = _setup()
    key = jax.random.key(0)
    batch = mm.train_batch(mm.constants(key, spec, hp), key, 0, spec, hp)
    chex.assert_shape(batch.tokens_BxL, (8, 16))
    chex.assert_shape(batch.next_probs_BxLxK, (8, 16, 5))
    chex.assert_type(batch.tokens_BxL, jnp.int32)
    chex.assert_type(batch.next_probs_BxLxK, jnp.float32)
    np.testing.assert_allclose(batch.next_probs_BxLxK.sum(-1), 1.0, atol=1e-5)


def test_stationary_distribution_is_invariant():
    bank = np.asarray(mm.sample_chains(jax.random.key(1), 6, 7, 1.0))
    pi = np.asarray(mm.stationary(jnp.asarray(bank)))
    np.testing.assert_allclose(bank.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.einsum("nk,nkj->nj", pi, bank), pi, atol=1e-5)
    # independent check: leading left eigenvector of T
    for T, p in zip(bank, pi):
        w, v = np.linalg.eig(T.T)
        ref = np.real(v[:, np.argmax(np.real(w))])
        np.testing.assert_allclose(p, ref / ref.sum(), atol=1e-4)


def test_stationary_of_slowly_mixing_and_sparse_chains():
    """Near-reducible (two blocks, leak 1e-4) and very sparse rows (Dirichlet 0.05) against the
    leading left eigenvector, and no LAPACK custom call in the compiled program."""
    leak = 1e-4
    block = np.array([[0.5, 0.5 - leak, leak, 0.0], [0.5, 0.5, 0.0, 0.0],
                      [0.0, 0.0, 0.5, 0.5], [0.0, leak, 0.5, 0.5 - leak]], np.float32)
    block /= block.sum(-1, keepdims=True)
    sparse = np.asarray(mm.sample_chains(jax.random.key(3), 4, 4, 0.05))
    for T in [block, *sparse]:
        p = np.asarray(mm.stationary(jnp.asarray(T)[None]))[0]
        w, v = np.linalg.eig(T.T.astype(np.float64))
        ref = np.real(v[:, np.argmax(np.real(w))])
        np.testing.assert_allclose(p, ref / ref.sum(), atol=2e-4)
    hlo = jax.jit(mm.stationary).lower(jnp.asarray(sparse)).compile().as_text()
    assert "custom-call" not in hlo and "custom_call" not in hlo


def test_rollout_matches_transition_and_stationary_start():
    """One chain, many sequences: empirical x_0 ~ pi and transition frequencies ~ T."""
    k = 4
    T = mm.sample_chains(jax.random.key(2), 1, k, 1.0)
    batch, length = 4000, 40
    tokens = np.asarray(mm.rollout(jax.random.key(3), jnp.broadcast_to(T, (batch, k, k)), length))
    T, pi = np.asarray(T[0]), np.asarray(mm.stationary(T))[0]
    start = np.bincount(tokens[:, 0], minlength=k) / batch
    assert np.abs(start - pi).max() < 4 * np.sqrt(0.25 / batch)
    counts = np.zeros((k, k))
    np.add.at(counts, (tokens[:, :-1].ravel(), tokens[:, 1:].ravel()), 1)
    freq = counts / counts.sum(1, keepdims=True)
    assert np.abs(freq - T).max() < 0.02
    # a stationary chain stays stationary: the state distribution at the last step is pi too
    last = np.bincount(tokens[:, -1], minlength=k) / batch
    assert np.abs(last - pi).max() < 4 * np.sqrt(0.25 / batch)


@pytest.mark.parametrize("weights", ["uniform", "random"])
def test_chain_choice_follows_mixture_weights_and_mask(weights):
    spec, hp = _setup(num_chains=3, bank=8, weights=weights, batch=4000, length=2)
    key = jax.random.key(4)
    consts = mm.constants(key, spec, hp)
    batch = mm.train_batch(consts, key, 0, spec, hp)
    chain = np.asarray(batch.chain_B)
    assert chain.min() >= 0 and chain.max() < 3  # inactive chains never drawn
    w = np.asarray(consts.weights_N)
    assert (w[3:] == 0).all()
    expected = w[:3] / w[:3].sum()
    if weights == "uniform":
        np.testing.assert_allclose(expected, 1 / 3)
    observed = np.bincount(chain, minlength=3) / chain.size
    assert np.abs(observed - expected).max() < 4 * np.sqrt(0.25 / chain.size)


def test_sequences_follow_their_own_chain():
    spec, hp = _setup(num_chains=4, batch=16, length=16)
    key = jax.random.key(5)
    consts = mm.constants(key, spec, hp)
    batch = mm.train_batch(consts, key, 3, spec, hp)
    bank = np.asarray(consts.bank_NxKxK)
    tokens, chain = np.asarray(batch.tokens_BxL), np.asarray(batch.chain_B)
    expected = bank[chain[:, None], tokens]  # T_c[x_t] per position
    np.testing.assert_allclose(np.asarray(batch.next_probs_BxLxK), expected, atol=1e-6)
    # every observed transition has positive probability under its chain
    assert (bank[chain[:, None], tokens[:, :-1], tokens[:, 1:]] > 0).all()


def test_chains_are_a_function_of_the_seed_not_the_bank_size():
    small, hp = _setup(num_chains=3)
    large, _ = _setup(num_chains=3, bank=32)
    key = jax.random.key(6)
    a, b = mm.constants(key, small, hp), mm.constants(key, large, hp)
    np.testing.assert_array_equal(a.bank_NxKxK, b.bank_NxKxK[:3])
    ta = mm.train_batch(a, key, 7, small, hp)
    tb = mm.train_batch(b, key, 7, large, hp)
    np.testing.assert_array_equal(ta.tokens_BxL, tb.tokens_BxL)
    other = mm.constants(jax.random.key(7), small, hp)
    assert not np.allclose(a.bank_NxKxK, other.bank_NxKxK)


def test_fresh_steps_and_held_out_splits_differ():
    spec, hp = _setup()
    key = jax.random.key(8)
    consts = mm.constants(key, spec, hp)
    s0 = mm.train_batch(consts, key, 0, spec, hp).tokens_BxL
    s1 = mm.train_batch(consts, key, 1, spec, hp).tokens_BxL
    assert not np.array_equal(s0, s1)
    ood = mm.eval_batch(consts, key, spec, hp, "ood")
    assert (np.asarray(ood.chain_B) == -1).all()
    # fresh chains are not training chains
    first = np.asarray(ood.next_probs_BxLxK)[:, 0]
    bank_rows = np.asarray(consts.bank_NxKxK).reshape(-1, 5)
    assert np.abs(first[:, None, :] - bank_rows[None]).sum(-1).min() > 1e-3


def test_oracle_loss_is_the_entropy_rate():
    """Oracle cross-entropy on long stationary sequences = sum_i pi_i H(T_i) (computed in numpy)."""
    cfg = config.from_dict(tiny_raw(task={"num_chains": 1, "context_length": 256},
                                    train={"eval_batch_size": 512}))
    spec, hp = config.spec_of(cfg), training.as_arrays(config.hparams_of(cfg))
    key = jax.random.key(9)
    consts = mm.constants(key, spec, hp)
    batch = mm.eval_batch(consts, key, spec, hp, "id")
    T = np.asarray(consts.bank_NxKxK[0], np.float64)
    pi = np.asarray(mm.stationary(consts.bank_NxKxK))[0]
    entropy_rate = -(pi[:, None] * T * np.log(T)).sum()
    assert abs(float(training.objectives.oracle_loss(batch)) - entropy_rate) < 0.02
