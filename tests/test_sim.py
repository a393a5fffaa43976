"""Structured identity mapping: the generator against its definition (cluster statistics, the
rotation, the probes), the models and SGD against hand-computed maps and gradients, the
objective's metrics on hand-made models, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim import config as cfglib
import jaxsim.testbeds as testbeds
from jaxsim import training
from jaxsim.models import mlp
from jaxsim.testbeds.sim import task as sim
from jaxsim.training import loop

SIM = {"task": {"name": "sim", "dim": 5, "num_concepts": 3, "concept_mean": 1.0,
                "concept_mean_step": 1.0, "concept_noise": 0.1, "concept_noise_step": 0.2,
                "rotate": True},
       "model": {"name": "mlp", "num_layers": 1, "d_mlp": 5},
       "train": {"steps": 20, "batch_size": 30, "eval_every": 10, "eval_batch_size": 16,
                 "lr": 0.1, "optimizer": "sgd", "weight_decay": 0.0, "grad_clip": 0.0},
       "sweep": {"seeds": 1, "checkpoint_every": 10, "plot": False}}


def setup(**sections):
    raw = {k: dict(v) for k, v in SIM.items()}
    for section, body in sections.items():
        raw[section] = {**raw[section], **body}
    cfg = cfglib.from_dict(raw)
    return cfg, cfglib.spec_of(cfg), training.as_arrays(cfglib.hparams_of(cfg))


def test_clusters_have_the_defined_means_noise_and_second_moment():
    _, spec, hp = setup()
    consts = sim.constants(jax.random.key(3), spec, hp)
    b = sim.sample(jax.random.key(0), consts, spec, 30000)
    x, z, c = (np.asarray(a, np.float64) for a in (b.x_BxD, b.z_BxD, b.cluster_B))
    rot = np.asarray(b.rotation_DxD, np.float64)
    np.testing.assert_allclose(x, z @ rot.T, atol=1e-5)
    mu, sigma = np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.3, 0.5])
    assert np.bincount(c.astype(int)).tolist() == [10000] * 3          # balanced clusters
    for p in range(3):
        zp = z[c == p]
        np.testing.assert_allclose(zp.mean(0), np.eye(5)[p] * mu[p], atol=0.02)
        np.testing.assert_allclose(zp[:, :3].std(0), sigma, rtol=0.03)  # shared Sigma
        assert np.all(zp[:, 3:] == 0)                                   # no noise past s
    a = sim.concept_signal(mu, sigma)                                   # mu^2 / s + sigma^2
    np.testing.assert_allclose(a, [1 / 3 + 0.01, 4 / 3 + 0.09, 3 + 0.25])
    second = z.T @ z / len(z)
    np.testing.assert_allclose(second[:3, :3], np.diag(a), atol=0.03)


def test_rotation_is_orthogonal_random_and_identity_when_off():
    rots = jax.vmap(lambda k: sim.random_orthogonal(k, 6))(jax.random.split(jax.random.key(0), 400))
    rots = np.asarray(rots, np.float64)
    eye = np.broadcast_to(np.eye(6), rots.shape)
    np.testing.assert_allclose(np.einsum("kji,kjl->kil", rots, rots), eye, atol=1e-5)
    np.testing.assert_allclose((rots ** 2).mean(0), np.full((6, 6), 1 / 6), atol=0.04)
    assert abs(rots.mean()) < 0.02
    _, spec, hp = setup(task={"rotate": False})
    np.testing.assert_array_equal(sim.constants(jax.random.key(0), spec, hp)[0], np.eye(5))


def test_probes_are_the_partial_compositions():
    _, spec, hp = setup()
    b = sim.eval_batch(sim.constants(jax.random.key(1), spec, hp), jax.random.key(1), spec, hp,
                       "id")
    bits = np.asarray(b.probe_bits_VxS)
    assert bits.shape == (8, 3) and bits[-1].tolist() == [1, 1, 1] and bits[4].tolist() == [1, 0, 0]
    z = np.asarray(b.probes_VxD) @ np.asarray(b.rotation_DxD)
    np.testing.assert_allclose(z[:, :3], bits * [1.0, 2.0, 3.0], atol=1e-5)
    np.testing.assert_allclose(z[:, 3:], 0, atol=1e-5)
    assert b.x_BxD.shape == (16, 5)


def _apply(spec, params, x):
    return loop.model_of(spec).apply({"params": params}, x)


@pytest.mark.parametrize("model", [{"name": "mlp", "num_layers": 3, "d_mlp": 4},
                                   {"name": "symmetric", "d_mlp": 7}])
def test_linear_models_are_their_end_to_end_matrix_and_init_scale_scales(model):
    _, spec, hp = setup(model=model)
    x = jax.random.normal(jax.random.key(0), (4, 5))
    params = loop.init(jax.random.key(0), spec, hp)["params"]
    w = mlp.end_to_end(params, spec.model)
    np.testing.assert_allclose(_apply(spec, params, x), x @ w.T, atol=1e-5)
    if model["name"] == "symmetric":
        np.testing.assert_allclose(w, w.T, atol=1e-6)
    _, spec2, hp2 = setup(model={**model, "init_scale": 0.1})
    w2 = mlp.end_to_end(loop.init(jax.random.key(0), spec2, hp2)["params"], spec2.model)
    power = 3 if model["name"] == "mlp" else 2       # W scales as init_scale^(number of factors)
    np.testing.assert_allclose(w2, w * 0.1 ** power, rtol=1e-4, atol=1e-7)


def test_relu_mlp_is_not_linear():
    _, spec, hp = setup(model={"num_layers": 2, "activation": "relu", "d_mlp": 8})
    params = loop.init(jax.random.key(0), spec, hp)["params"]
    x = jax.random.normal(jax.random.key(1), (3, 5))
    assert not np.allclose(_apply(spec, params, -x), -_apply(spec, params, x), atol=1e-4)


def test_sgd_step_is_the_hand_computed_gradient_step():
    """One SGD step on (1/2) mean ||W x - x||^2: W <- W - lr (W - I) X^T X / B."""
    _, spec, hp = setup()
    key = jax.random.key(2)
    state = loop.init(key, spec, hp)
    consts = sim.constants(key, spec, hp)
    x = np.asarray(sim.train_batch(consts, key, jnp.int32(0), spec, hp).x_BxD, np.float64)
    w0 = np.asarray(mlp.end_to_end(state["params"], spec.model), np.float64)
    new, _ = loop.train_step(state, consts, key, spec, hp)
    expect = w0 - 0.1 * (w0 - np.eye(5)) @ (x.T @ x) / len(x)
    np.testing.assert_allclose(mlp.end_to_end(new["params"], spec.model), expect, atol=1e-5)


def test_identity_metrics_on_hand_made_models():
    """W = R diag(1, 0.5, 0, 0, 0) R^T: coordinates and losses by hand."""
    _, spec, hp = setup()
    consts = sim.constants(jax.random.key(4), spec, hp)
    b = sim.eval_batch(consts, jax.random.key(4), spec, hp, "id")
    rot = np.asarray(b.rotation_DxD)
    for diag in ([1, 1, 1, 1, 1], [1, 0.5, 0, 0, 0]):
        w = rot @ np.diag(diag) @ rot.T
        (inputs,) = testbeds.get("sim").objective.inputs(b)
        m = testbeds.get("sim").objective.evaluate(jnp.asarray(inputs) @ w.T, b)
        mu = np.array([1.0, 2.0, 3.0])
        np.testing.assert_allclose([m[f"ood_coord{p}"] for p in (1, 2, 3)], mu * diag[:3],
                                   atol=1e-5)
        np.testing.assert_allclose([m[f"centre_coord{p}"] for p in (1, 2, 3)], mu * diag[:3],
                                   atol=1e-5)
        miss = (1 - np.array(diag[:3])) * mu
        np.testing.assert_allclose(m["ood_loss"], 0.5 * np.sum(miss ** 2), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m["comp_loss_011"], 0.5 * np.sum(miss[1:] ** 2), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(m["ood_off"], 0.0, atol=1e-5)
    assert set(m) == {n for n in testbeds.get('sim').objective.eval_names(spec)}


@pytest.mark.parametrize("section, body, words", [
    ("model", {"name": "gpt"}, "model.name"),
    ("task", {"num_concepts": 7, "dim": 8}, "task.num_concepts"),
    ("task", {"num_concepts": 6, "dim": 5}, "task.num_concepts"),
    ("task", {"concept_mean": 1.0, "concept_mean_step": -0.5}, "task.concept_mean"),
    ("task", {"concept_noise": 0.0, "concept_noise_step": -0.1}, "task.concept_noise"),
    ("model", {"activation": "relu", "num_layers": 1}, "model.activation"),
    ("model", {"activation": "tanh"}, "model.activation"),
    ("train", {"optimizer": "adam"}, "train.optimizer"),
])
def test_bad_sim_configs(section, body, words):
    with pytest.raises(cfglib.ConfigError, match=words):
        setup(**{section: body})


def test_sim_models_need_the_sim_task():
    raw = {"task": {"name": "markov_mixture"}, "model": {"name": "symmetric"}}
    with pytest.raises(cfglib.ConfigError, match="task.name=sim"):
        cfglib.from_dict(raw)


# ---- analysis on hand-made cases ----------------------------------------------------------

from jaxsim import cli  # noqa: E402
from jaxsim.testbeds.sim import analysis as simlib# noqa: E402


def test_closed_form_gd_is_population_gradient_descent_and_flow_its_small_lr_limit():
    """closed_form(discrete) == iterating W <- W - lr (W - I) A_x with A_x = R diag(a) R^T."""
    rng = np.random.default_rng(0)
    dim, means, noises, lr = 4, np.array([1.0, 2.0]), np.array([0.1, 0.3]), 0.05
    rot = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    w0 = 0.3 * rng.normal(size=(dim, dim))
    a = means ** 2 / 2 + noises ** 2
    a_x = rot @ np.diag(np.r_[a, 0, 0]) @ rot.T
    steps = np.array([1, 5, 20, 60])
    pred = simlib.closed_form(w0, rot, means, noises, lr, steps, discrete=True)
    w, expect = w0.copy(), []
    for n in range(1, 61):
        w = w - lr * (w - np.eye(dim)) @ a_x
        if n in steps:
            expect.append((rot.T @ w @ rot @ np.r_[means, 0, 0])[:2])
    np.testing.assert_allclose(pred["ood_coords"], np.array(expect).T, atol=1e-10)
    # from W0 = 0 without rotation: (1 - e^{-a t}) mu, the paper's formula
    flow = simlib.closed_form(np.zeros((dim, dim)), np.eye(dim), means, noises, lr, steps)
    np.testing.assert_allclose(flow["centre_coords"],
                               (1 - np.exp(-np.outer(a, lr * steps))) * means[:, None])
    tiny = simlib.closed_form(w0, rot, means, noises, 1e-4, steps * 500, discrete=True)
    near = simlib.closed_form(w0, rot, means, noises, 1e-4, steps * 500)
    np.testing.assert_allclose(tiny["ood_coords"], near["ood_coords"], atol=1e-4)


def test_rise_rule_on_hand_made_curves():
    steps = np.arange(1, 9) * 10
    down = np.array([5.0, 3, 2, 1.5, 1.2, 1.1, 1.05, 1.0])
    r = simlib.rise(steps, down, scale=5.0)
    assert r["rise"] == 0 and not r["nonmonotonic"]
    bump = np.array([5.0, 3, 1.0, 1.6, 2.0, 1.2, 0.5, 0.1])      # swing-by: down, up, down
    r = simlib.rise(steps, bump, scale=5.0)
    assert r["nonmonotonic"] and r["min_step"] == 30 and r["max_step"] == 50
    np.testing.assert_allclose([r["rise"], r["rise_rel"]], [1.0, 0.2])
    jitter = down + np.array([0, 0, 0, 0, 0, 0, 0.03, 0])       # 0.03 < 0.01 x 5
    assert not simlib.rise(steps, jitter, scale=5.0)["nonmonotonic"]


def test_learning_times_order_and_slowing_on_exponentials():
    steps = np.arange(1, 2001)
    a = np.array([0.01, 0.003])
    coords = 1 - np.exp(-np.outer(a, steps))                    # mu = 1, learned from 0
    times = simlib.learn_times(steps, coords, np.ones(2))
    np.testing.assert_allclose(times["t90"], np.ceil(np.log(10) / a), atol=1)
    assert simlib.order_matches(a, times["t90"])
    assert not simlib.order_matches(a[::-1], times["t90"])
    assert simlib.order_matches(a, [100, None]) and simlib.order_matches(a, [None, None]) is None
    np.testing.assert_allclose(simlib.slowing(times), np.log(10) / np.log(5), rtol=0.02)


def test_partial_order_counts_violations():
    ok = {"00": np.zeros(3), "01": np.ones(3), "10": np.ones(3) * 2, "11": np.ones(3) * 4}
    assert simlib.partial_order(ok, 2, 1.0) == {"pairs": 2, "violations_fraction": 0.0,
                                                 "final_violations": []}
    bad = dict(ok, **{"10": np.array([2.0, 5.0, 5.0])})           # 10 above 11 for two steps
    r = simlib.partial_order(bad, 2, 1.0)
    assert r["violations_fraction"] == pytest.approx(2 / 6) and r["final_violations"] == ["10>11"]


def test_cli_sweep_analyze_plot_and_closed_form(tmp_path):
    """A tiny sweep over depth: the one-layer runs follow the closed form (GD to 1%)."""
    raw = {k: dict(v) for k, v in SIM.items()}
    raw["task"].update(dim=3, num_concepts=2, concept_noise_step=0.0, rotate=True)
    raw["model"].update(d_mlp=3, init_scale=0.5)
    raw["train"].update(steps=120, batch_size=64, eval_every=6, lr=0.05)
    raw["sweep"].update(seeds=2, axes={"model.num_layers": [1, 2]}, checkpoint_every=60)
    import yaml
    path, out = tmp_path / "sim.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 0
    assert cli.main(["analyze", str(out)]) == 0
    assert cli.main(["plot", str(out)]) == 0
    import json
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["task"] == "sim" and len(doc["runs"]) == 4
    for e in doc["runs"]:
        assert e["learn_order"] == [2, 1] == e["signal_order"] and e["order_matches_signal"]
        assert not e["eval"]["nonmonotonic"]
        if e["axes"]["model.num_layers"] == 1:
            assert e["closed_form"]["gd"]["max_error"] < 0.01
            assert e["closed_form"]["flow"]["max_error"] < 0.05
        else:
            assert e["closed_form"] is None
    for name in ("sim_trajectories", "sim_learning_curves", "sim_loss_curves", "sim_phase"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
