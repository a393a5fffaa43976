"""Causal SAE probes and the causal training term: the effect metric on hand-made
distributions, AUC against its pairwise definition, correlation finding a planted latent, code
edits, nearest neighbours, and end to end on a tiny trained Markov transformer (identity splice
changes nothing, the causal term lowers the interpolation error, analyze/plot write the probes)."""
import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from jaxsim import cli, stages, training
from jaxsim import config as cfglib
from jaxsim.testbeds.activations import probes as probes
from jaxsim.training import sae_loop
from jaxsim.testbeds.activations import source as activations
from jaxsim.testbeds.activations import causal as causal


def _dist(*rows):
    p = np.array(rows, np.float32)
    return jnp.asarray(p / p.sum(-1, keepdims=True))


def test_effect_on_hand_made_distributions():
    """Moving the prediction from p_a to (1 - l) p_a + l p_b gives shift l exactly (TV is
    linear on that segment), success iff l > 1/2, KL(base || int) by its definition."""
    p_a, p_b = _dist([6, 3, 1]), _dist([1, 2, 7])
    valid = jnp.array([True])
    for lam in (0.0, 0.3, 0.7, 1.0):
        p_int = (1 - lam) * p_a + lam * p_b
        out = probes.effect(jnp.log(p_a), jnp.log(p_int), p_a, p_b, valid)
        np.testing.assert_allclose(float(out["shift"]), lam, atol=1e-6)
        assert float(out["success"]) == float(lam > 0.5)
        a, q = np.asarray(p_a[0], np.float64), np.asarray(p_int[0], np.float64)
        np.testing.assert_allclose(float(out["kl"]), np.sum(a * np.log(a / q)), rtol=1e-4,
                                   atol=1e-7)
    # points whose p_a and p_b coincide, or flagged invalid, are not scored
    out = probes.effect(jnp.log(p_a), jnp.log(p_b), p_a, p_a, valid)
    assert float(out["shift"]) == 0.0 and float(out["success"]) == 0.0


def test_markov_expected_is_the_chain_row():
    bank = jax.random.dirichlet(jax.random.key(0), jnp.ones(4), (3, 4))   # [N=3, K=4, K]
    ctx = SimpleNamespace(seqs=SimpleNamespace(chain_B=jnp.array([2, 0])))
    consts = SimpleNamespace(task=SimpleNamespace(bank_NxKxK=bank))
    got = probes.markov_expected(ctx, consts, "token", jnp.array([0, 1, 1]), jnp.array([3, 1, 0]))
    np.testing.assert_array_equal(got, np.stack([bank[2, 3], bank[0, 1], bank[0, 0]]))
    assert probes.markov_expected(ctx, consts, "depth", jnp.array([0]), jnp.array([0])) is None
    # fallback: the mean clean prediction over the points of the value
    member = jax.nn.one_hot(jnp.array([0, 1, 0]), 2)
    probs = _dist([1, 0], [0, 1], [0, 1])
    got = probes.expected("pcfg", None, None, "depth", jnp.array([0]), jnp.array([0]), member,
                          probs)
    np.testing.assert_allclose(got, [[0.5, 0.5]])


def test_auc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (200, 3)).astype(np.float32)    # many ties
    member = (rng.random((200, 3)) < 0.3).astype(np.float32)
    got = np.asarray(probes.auc(jnp.asarray(scores), jnp.asarray(member)))
    for v in range(3):
        pos, neg = scores[member[:, v] == 1, v], scores[member[:, v] == 0, v]
        ref = ((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())
        np.testing.assert_allclose(got[v], ref, rtol=1e-5)


def test_correlation_finds_a_planted_latent():
    rng = np.random.default_rng(1)
    value = rng.integers(0, 4, 500)
    z = np.maximum(rng.normal(0, 0.3, (500, 12)), 0).astype(np.float32)
    z[:, 7] = np.where(value == 2, 1.5 + 0.1 * rng.random(500), 0.0)
    stats = probes.correlations(jnp.asarray(z), jnp.asarray(value), 4)
    assert int(stats["best_latent"][2]) == 7
    assert float(stats["corr"][2]) > 0.95 and float(stats["auc"][2]) > 0.99
    assert float(stats["f1"][2]) > 0.99
    np.testing.assert_allclose(float(stats["clamp"][2]), z[value == 2, 7].mean(), rtol=1e-5)
    np.testing.assert_array_equal(stats["count"], np.bincount(value, minlength=4))


def test_clamp_and_control_codes():
    z = jnp.array([[1.0, 2.0, 0.0, 0.0, 0.5, 0.0]])
    la, lb, cb = jnp.array([1]), jnp.array([3]), jnp.array([4.0])
    np.testing.assert_array_equal(probes.clamp_codes(z, la, lb, cb), [[1, 0, 0, 4, 0.5, 0]])
    np.testing.assert_array_equal(probes.clamp_codes(z, lb, lb, cb), [[1, 2, 0, 4, 0.5, 0]])
    for seed in range(5):
        ctrl = np.asarray(probes.control_codes(jax.random.key(seed), z, la, lb, cb))[0]
        delta = ctrl - np.asarray(z[0])
        assert delta[1] == 0 and delta[3] == 0                 # the probe latents untouched
        assert sorted(delta[delta != 0].tolist()) == [-2.0, 4.0]   # the same coefficient moves


def test_nearest_other_and_interpolation():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30, 5)).astype(np.float32)
    z[7] = z[3]                                   # a duplicate: nearest is the other copy
    d = ((z[:, None] - z[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    j = np.asarray(causal.nearest_other(jnp.asarray(z)))
    np.testing.assert_array_equal(j, d.argmin(-1))
    assert j[3] == 7 and j[7] == 3
    logits = rng.normal(size=(30, 4)).astype(np.float32)
    for s in (0.0, 1.0):
        z_int, target = causal.interpolate(jnp.asarray(z), jnp.asarray(logits),
                                           jnp.full((30,), s))
        np.testing.assert_allclose(z_int, z if s == 0 else z[j], atol=1e-6)
        np.testing.assert_allclose(target, logits if s == 0 else logits[j], atol=1e-6)


def test_features_of_a_task_that_provides_them():
    """A source batch with features_BxLxF is used as is (aligned to the input positions);
    otherwise the token is the one feature."""
    tokens = jnp.arange(12).reshape(2, 6)
    feats = jnp.stack([tokens % 3, tokens // 2], -1)
    inputs = tokens[:, :-1]
    got = activations._features(SimpleNamespace(features_BxLxF=feats), inputs)
    np.testing.assert_array_equal(got, feats[:, :5])
    got = activations._features(SimpleNamespace(tokens_BxL=tokens), inputs)
    np.testing.assert_array_equal(got, inputs[..., None])


def test_causal_coef_needs_activations():
    raw = {"task": {"name": "concept_geometry", "dim": 8}, "model": {"name": "sae", "d_sae": 16,
           "k": 2, "causal_coef": 1.0}}
    with pytest.raises(cfglib.ConfigError, match="model.causal_coef"):
        cfglib.from_dict(raw)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny Markov transformer trained for a few hundred steps (its chains learned enough)."""
    from conftest import tiny_raw
    root = tmp_path_factory.mktemp("causal_src")
    path = root / "src.yaml"
    path.write_text(yaml.safe_dump(tiny_raw(task={"num_chains": 2},
                                            train={"steps": 200, "eval_every": 100})))
    assert cli.main(["sweep", str(path), "--out", str(root / "src"), "--no-progress"]) == 0
    return root / "src"


def _sae_raw(src, **model):
    return {"task": {"name": "activations", "source": str(src), "site": "block0", "dim": 16},
            "model": {"name": "sae", "kind": "topk", "d_sae": 32, "k": 2, **model},
            "train": {"steps": 60, "batch_size": 120, "lr": 3e-3, "eval_every": 30,
                      "weight_decay": 0.0, "beta2": 0.999, "grad_clip": 0.0,
                      "eval_batch_size": 128},
            "sweep": {"seeds": 1, "checkpoint_every": 30, "plot": True}}


def test_identity_splice_and_training_points(source):
    """Splicing the clean activation back changes nothing; the training points are the prefix
    of the step's sequences (so the causal term sees the same data as the SAE loss)."""
    spec, hp = stages.first_run(cfglib.from_dict(_sae_raw(source)))
    key = jax.random.key(0)
    consts = activations.constants(key, spec, hp)
    ctx = activations.context(key, consts, spec, 4)
    seq, pos = jnp.array([0, 1, 3]), jnp.array([2, 9, 14])
    logp = probes.splice_points(consts, spec, ctx, seq, pos, ctx.acts_BxTxD[seq, pos])
    clean = jax.nn.log_softmax(ctx.logits_BxTxV[seq, pos], -1)
    np.testing.assert_allclose(logp, clean, atol=1e-5)
    assert float(probes.kl(clean, logp).max()) < 1e-6
    step = jnp.asarray(3)
    batch = activations.train_batch(consts, key, step, spec, hp)
    pts = activations.points(activations.train_context(consts, key, step, spec), 120)
    np.testing.assert_array_equal(batch.x_BxD, pts.x_BxD)
    np.testing.assert_array_equal(pts.features_BxK[:, 0], pts.concept_B)


def test_causal_term_trains_and_the_probes_are_written(source, tmp_path):
    """One sweep over causal_coef in {0, 10} (one compile): the term lowers the held-out
    interpolation error; the coef-0 run of that group equals the run trained alone (where the
    term is compiled out); analyze writes the causal probes and plot draws them."""
    raw = _sae_raw(source)
    raw["sweep"]["axes"] = {"model.causal_coef": [0.0, 10.0]}
    path = tmp_path / "sae.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    m = np.load(out / "metrics.npz")
    err = m["interp_error_id"][:, -1]
    assert np.isfinite(err).all() and err[1] < err[0], err
    spec, hp = stages.first_run(cfglib.from_dict(_sae_raw(source)))
    assert not sae_loop.causal_on(spec)
    _, alone = jax.jit(training.train, static_argnums=1)(jax.random.key(0), spec, hp)
    np.testing.assert_allclose(m["fvu_id"][0], alone["fvu_id"], rtol=1e-4)
    assert cli.main(["analyze", str(out), "--sequences", "256"]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["causal"]["features"] == ["token"] and doc["causal"]["feature_sizes"] == [5]
    for run in doc["runs"]:
        tok = run["causal"]["token"]
        assert len(tok["corr"]) == 5 and tok["points"] > 0
        assert tok["base"]["kl"] == 0 and tok["base"]["shift"] == 0
        assert tok["probe"]["kl"] > 0 and tok["control"]["kl"] > 0
        assert max(tok["auc"]) > 0.8    # some latent tracks each frequent state
        assert "mcc_concepts" in run    # the existing keys stay
    assert cli.main(["plot", str(out)]) == 0
    for name in ("causal_effects.png", "feature_latents.png"):
        assert (out / "figures" / name).stat().st_size > 0
