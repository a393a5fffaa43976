"""The four ICL algorithms against hand-checkable cases, the mixture fit, and `jaxsim analyze`."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import yaml

from jaxsim import cli
from jaxsim.testbeds.markov_mixture import algorithms as alg
from jaxsim.testbeds.markov_mixture import icl as icl
from jaxsim.testbeds.markov_mixture import task as mm

from conftest import tiny_raw


def _chains(num, k, seed=0):
    bank = mm.sample_chains(jax.random.key(seed), num, k, 1.0)
    return bank, mm.stationary(bank)


def _sequence(T_KxK, length, seed=1):
    return mm.rollout(jax.random.key(seed), T_KxK[None], length)[0]


def test_predictions_are_distributions_and_finite_for_many_chains_and_long_contexts():
    bank, pi = _chains(2048, 10)
    x = _sequence(bank[5], 1024)
    ends = jnp.array([0, 9, 99, 1022])
    preds = alg.predict_all(x, ends, bank, pi, jnp.zeros(2048))
    assert preds.shape == (4, 4, 10)
    assert np.isfinite(np.asarray(preds)).all()
    np.testing.assert_allclose(preds.sum(-1), 1.0, atol=1e-5)


def test_bigram_retrieval_posterior_concentrates_on_the_generating_chain():
    bank, pi = _chains(16, 5)
    x = _sequence(bank[3], 400)
    ends = jnp.array([0, 399 - 1])
    pred = alg.bigram_retrieval(x, ends, bank, pi, jnp.zeros(16))
    truth = bank[3][x[ends[-1]]]
    np.testing.assert_allclose(pred[-1], truth, atol=1e-3)
    # at the first token the posterior is still spread: far from the generating row
    assert np.abs(np.asarray(pred[0]) - np.asarray(bank[3][x[0]])).max() > 1e-3


def test_inactive_chains_get_zero_prior():
    bank, pi = _chains(4, 3)
    log_w = jnp.log(jnp.array([0.0, 1.0, 0.0, 0.0]))
    x = _sequence(bank[0], 50)
    pred = alg.unigram_retrieval(x, jnp.array([49]), bank, pi, log_w)
    np.testing.assert_allclose(pred[0], pi[1], atol=1e-6)


def test_single_chain_retrieval_is_the_true_chain():
    bank, pi = _chains(1, 4)
    x = _sequence(bank[0], 30)
    ends = jnp.arange(29)
    uni = alg.unigram_retrieval(x, ends, bank, pi, jnp.zeros(1))
    bi = alg.bigram_retrieval(x, ends, bank, pi, jnp.zeros(1))
    np.testing.assert_allclose(uni, jnp.broadcast_to(pi[0], uni.shape), atol=1e-6)
    np.testing.assert_allclose(bi, bank[0][x[ends]], atol=1e-6)


def test_inference_converges_to_the_true_chain():
    bank, pi = _chains(1, 3, seed=4)
    x = _sequence(bank[0], 20000, seed=5)
    ends = jnp.array([19998])
    bi = alg.bigram_inference(x, ends, bank, pi, jnp.zeros(1))
    np.testing.assert_allclose(bi[0], bank[0][x[19998]], atol=0.03)
    uni = alg.unigram_inference(x, ends, bank, pi, jnp.zeros(1))
    np.testing.assert_allclose(uni[0], pi[0], atol=0.02)


def test_bigram_inference_counts_by_hand():
    x = jnp.array([0, 1, 0, 1, 0, 2, 0])  # out of state 0: 1, 1, 2 ; last state 0
    bank, pi = _chains(1, 3)
    pred = alg.bigram_inference(x, jnp.array([6]), bank, pi, jnp.zeros(1))
    np.testing.assert_allclose(pred[0], np.array([0 + 1, 2 + 1, 1 + 1]) / (3 + 3), atol=1e-6)
    # at prefix end 0 nothing is counted yet: uniform
    first = alg.bigram_inference(x, jnp.array([0]), bank, pi, jnp.zeros(1))
    np.testing.assert_allclose(first[0], 1 / 3, atol=1e-6)


def test_jit_equals_eager():
    bank, pi = _chains(8, 4)
    x = _sequence(bank[2], 64)
    ends = jnp.array([0, 5, 62])
    eager = alg.predict_all(x, ends, bank, pi, jnp.zeros(8))
    jitted = jax.jit(alg.predict_all)(x, ends, bank, pi, jnp.zeros(8))
    np.testing.assert_allclose(eager, jitted, atol=1e-5)


def test_mixture_fit_recovers_known_weights():
    preds = jax.nn.softmax(jax.random.normal(jax.random.key(0), (4, 200, 5)) * 2, axis=-1)
    truth = jnp.array([0.1, 0.6, 0.0, 0.3])
    target = jnp.einsum("a,abk->bk", truth, preds)
    w = icl.fit_mixture(target, preds, iters=2000)
    np.testing.assert_allclose(w, truth, atol=0.02)
    assert abs(float(w.sum()) - 1) < 1e-5 and (np.asarray(w) >= 0).all()
    assert float(icl.kl(target, target).max()) < 1e-6


def test_analyze_tiny_sweep_writes_json_and_figures(tmp_path):
    raw = tiny_raw(task={"num_states": 3, "context_length": 24},
                   sweep={"axes": {"task.num_chains": [1, 16]}, "seeds": 2, "plot": True})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert cli.main(["analyze", str(out), "--sequences", "16"]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["algorithms"] == list(alg.NAMES)
    assert doc["context_lengths"][0] == 1 and doc["context_lengths"][-1] == 23
    assert [r["run_id"] for r in doc["runs"]] == [0, 1, 2, 3]
    run = doc["runs"][0]
    S, G = len(run["steps"]), len(doc["context_lengths"])
    assert run["steps"] == [10, 20]
    for split in ("id", "ood"):
        block = run[split]
        assert np.array(block["kl_model_to_alg"]).shape == (S, G, 4)
        assert np.array(block["mixture_weights"]).shape == (S, G, 4)
        np.testing.assert_allclose(np.array(block["mixture_weights"]).sum(-1), 1, atol=1e-4)
        assert (np.array(block["kl_alg_to_model"]) >= -1e-6).all()
        assert set(np.ravel(block["dominant"])) <= set(alg.NAMES)
        assert np.array(block["model_loss"]).shape == (S, G)
    # N = 1: both retrieval algorithms predict with the true chain, so the oracle loss on
    # in-distribution contexts equals bigram retrieval's loss; the model's is not below it by much
    assert np.mean(run["id"]["model_loss"]) > np.mean(run["id"]["oracle_loss"]) - 0.1
    assert cli.main(["plot", str(out)]) == 0
    for png in ["phase_diagram.png", "algorithm_distances.png"]:
        assert (out / "figures" / png).stat().st_size > 5000
    assert cli.main(["plot", str(out), "--num-chains", "16"]) == 0
    assert cli.main(["plot", str(out), "--num-chains", "999"]) == 2   # never another N silently
    assert cli.main(["analyze", str(out), "--context-lengths", "1,99"]) == 2
