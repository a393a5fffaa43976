"""SAE sweeps end to end: every kind trains through the sweep engine, a run inside a sweep equals
the run alone, training recovers known concept directions, analyze/plot write their files."""
import json

import jax
import numpy as np
import pytest
import yaml

from jaxsim import cli, stages, sweeps, testbeds, training
from jaxsim import config as cfglib
from jaxsim.sweeps import engine

SAE = {"task": {"name": "concept_geometry", "geometry": "subspaces", "dim": 16,
                "num_concepts": 4, "max_concept_dim": 2},
       "model": {"name": "sae", "kind": "topk", "d_sae": 32, "k": 2},
       "train": {"steps": 40, "batch_size": 64, "lr": 3e-3, "eval_every": 20,
                 "weight_decay": 0.0, "beta2": 0.999, "grad_clip": 0.0,
                 "eval_batch_size": 128},
       "sweep": {"seeds": 1, "checkpoint_every": 20, "plot": False}}


def _raw(**sections):
    raw = {k: dict(v) for k, v in SAE.items()}
    for section, body in sections.items():
        # another testbed's task section starts afresh (each testbed has its own task keys)
        base = {} if body.get("name", raw[section].get("name")) != raw[section].get("name") else raw[section]
        raw[section] = {**base, **body}
    return raw


# topk runs through the sweep loop in the tests below; relu's loss is checked in test_sae.py
KINDS = ["batchtopk", "jumprelu", "spade"]


def test_kinds_sweep_analyze_and_plot(tmp_path):
    """One shape group per kind (a static field), each with its own aux/threshold handling."""
    raw = _raw(sweep={"axes": {"model.kind": KINDS}, "plot": True})
    path = tmp_path / "sae.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    programs = engine.Programs()
    sweeps.start(cfglib.load(path), out, progress=False, programs=programs)
    assert sum(programs.traces.values()) <= 2 * len(KINDS)   # init + interval per shape group
    assert cli.main(["plot", str(out)]) == 0
    m = np.load(out / "metrics.npz")
    for name in ("fvu_id", "l0_id", "f1_id", "dead_fraction_id", "dense_fraction_id"):
        assert np.isfinite(m[name][:, -1]).all(), name
    assert (m["l0_id"][:, -1] > 0).all()
    assert cli.main(["analyze", str(out), "--sequences", "128"]) == 0
    assert cli.main(["plot", str(out)]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert [r["axes"]["model.kind"] for r in doc["runs"]] == KINDS
    for run in doc["runs"]:
        assert len(run["mcc_coordinates"]) == len(run["steps"])
        assert all(0 <= v <= 1 for v in run["mcc_coordinates"] + run["mcc_concepts"])
        assert sorted(run["intrinsic_dims"]) == [1, 1, 2, 2]
    for name in ("sae_curves.png", "sparsity_fidelity.png", "concept_l0.png"):
        assert (out / "figures" / name).stat().st_size > 0


def test_topk_run_in_a_k_sweep_equals_the_run_alone():
    """k is a vmapped hparam under the group's largest k: the k = 2 run of a {1, 2, 4} sweep
    (compiled for k <= 4) equals k = 2 trained alone (compiled for k <= 2)."""
    cfg = cfglib.from_dict(_raw())
    spec = cfglib.spec_of(cfg)
    group_spec = cfglib.spec_of(cfglib.from_dict(_raw(model={"k": 4})))
    hp = training.as_arrays(cfglib.hparams_of(cfg))
    key = jax.random.key(0)
    _, alone = jax.jit(training.train, static_argnums=1)(key, spec, hp)
    many = jax.tree.map(lambda a: np.stack([a] * 3), hp)
    many["model"]["k"] = np.array([1, 2, 4], np.int32)
    keys = jax.numpy.stack([key] * 3)
    _, swept = jax.jit(jax.vmap(training.train, (0, None, 0)), static_argnums=1)(
        keys, group_spec, many)
    for name, values in alone.items():
        np.testing.assert_allclose(swept[name][1], values, rtol=2e-4, atol=1e-5, err_msg=name)
    assert swept["l0_id"][0, -1] == 1 and swept["l0_id"][2, -1] == 4


def test_topk_sae_recovers_one_dimensional_concepts_through_the_sweep_loop():
    """1-D concepts through the origin: the true directions are the dictionary to find."""
    cfg = cfglib.from_dict(_raw(task={"max_concept_dim": 1, "num_concepts": 6,
                                      "concept_offset": 0.0},
                                model={"k": 1, "d_sae": 24},
                                train={"steps": 300, "eval_every": 300, "lr": 1e-2}))
    spec = cfglib.spec_of(cfg)
    hp = training.as_arrays(cfglib.hparams_of(cfg))
    _, m = jax.jit(training.train, static_argnums=1)(jax.random.key(1), spec, hp)
    assert float(m["max_cos_id"][-1]) > 0.9
    assert float(m["fvu_id"][-1]) < 0.25   # from ~1 at init


@pytest.mark.parametrize("overrides,needle", [
    ({"model": {"k": 64}}, "model.k"),
    ({"task": {"name": "markov_mixture"}}, "model.name=sae"),
    ({"model": {"kind": "gated"}}, "model.kind"),
])
def test_bad_sae_configs(overrides, needle):
    with pytest.raises(cfglib.ConfigError, match=needle):
        cfglib.from_dict(_raw(**overrides))


def test_jumprelu_l0_falls_as_its_coefficient_rises():
    """The L0 penalty reaches the thresholds through the rectangle-kernel pseudo-gradient: in one
    vmapped sweep over the coefficient, L0 decreases monotonically and thresholds rise."""
    cfg = cfglib.from_dict(_raw(model={"kind": "jumprelu", "threshold_init": 0.3,
                                       "bandwidth": 0.05},
                                train={"steps": 300, "eval_every": 300}))
    spec = cfglib.spec_of(cfg)
    hp = jax.tree.map(lambda a: np.stack([a] * 3), training.as_arrays(cfglib.hparams_of(cfg)))
    hp["model"]["sparsity_coef"] = np.array([0.0, 0.1, 1.0], np.float32)
    keys = jax.numpy.stack([jax.random.key(0)] * 3)
    state, m = jax.jit(jax.vmap(training.train, (0, None, 0)), static_argnums=1)(keys, spec, hp)
    l0 = np.asarray(m["l0_id"][:, -1])
    assert l0[0] > l0[1] > l0[2]
    theta = np.exp(np.asarray(state["params"]["log_threshold"])).mean(-1)
    assert theta[0] < theta[1] < theta[2]


def test_sae_on_the_activations_of_a_saved_transformer(tmp_path):
    """Source: a tiny markov sweep; SAE: its block0 residual stream. An identity splice leaves
    the loss unchanged; the SAE's splice sits between clean and zero-ablation."""
    from conftest import tiny_raw
    from jaxsim.testbeds.activations import source as activations
    src_cfg = tmp_path / "src.yaml"
    src_cfg.write_text(yaml.safe_dump(tiny_raw(train={"steps": 60, "eval_every": 20})))
    src = tmp_path / "src"
    assert cli.main(["sweep", str(src_cfg), "--out", str(src), "--no-progress"]) == 0
    raw = _raw(task={"name": "activations", "source": str(src), "site": "block0", "dim": 16},
               train={"steps": 60, "eval_every": 30, "batch_size": 128})
    path = tmp_path / "sae.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    m = np.load(out / "metrics.npz")
    clean, spliced, zero = (m[f"{k}_id"][0, -1] for k in ("clean_loss", "spliced_loss",
                                                          "zero_ablation_loss"))
    assert clean <= spliced + 1e-4 and np.isfinite([clean, spliced, zero]).all()
    spec, hp = stages.first_run(cfglib.from_dict(raw))
    key = jax.random.key(0)
    consts = activations.constants(key, spec, hp)
    same = activations.splice_losses(lambda x: x, consts, key, spec, 8)
    assert float(same["spliced_loss"]) == float(same["clean_loss"])
    batch = testbeds.of(spec).sae.sample(key, consts, spec, hp, 40)
    assert batch.x_BxD.shape == (40, 16) and int(batch.concept_B.max()) < 5   # tokens are states
    assert cli.main(["analyze", str(out), "--sequences", "256"]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert 0 <= doc["runs"][0]["mcc_concepts"][-1] <= 1


def test_bad_activation_sources(tmp_path):
    from jaxsim.testbeds.activations import source as activations
    raw = _raw(task={"name": "activations", "source": str(tmp_path / "nowhere"), "dim": 16})
    cfg = cfglib.from_dict(raw)
    with pytest.raises(cfglib.ConfigError, match="init.source .* does not exist"):
        stages.resolve(cfg)
    with pytest.raises(cfglib.ConfigError, match="needs init.source"):
        activations.source_of(cfglib.spec_of(cfg))
    with pytest.raises(cfglib.ConfigError, match="needs init.source"):
        cfglib.from_dict(_raw(task={"name": "activations"}))


def test_input_normalisation_makes_training_scale_invariant():
    """With model.normalize_input the SAE sees inputs with E||x||^2 = D: the input scale comes
    from the data, and data x10 with the scale / 10 gives the same codes and a reconstruction
    x10 (the metrics stay in the input's units)."""
    from jaxsim.training import sae_loop
    cfg = cfglib.from_dict(_raw(model={"normalize_input": True},
                                train={"steps": 60, "eval_every": 60}))
    spec, hp = cfglib.spec_of(cfg), training.as_arrays(cfglib.hparams_of(cfg))
    key = jax.random.key(2)
    state = training.init(key, spec, hp)
    x = np.asarray(testbeds.of(spec).sae.sample(key, testbeds.of(spec).constants(key, spec, hp),
                                                spec, hp, 512).x_BxD)
    scaled = float(state["input_scale"]) * x
    np.testing.assert_allclose(np.mean(np.sum(scaled ** 2, -1)), spec.task.dim, rtol=0.1)
    z1, xh1 = sae_loop.forward(state, jax.numpy.asarray(x), spec, hp)
    big = dict(state, input_scale=state["input_scale"] / 10)
    z2, xh2 = sae_loop.forward(big, jax.numpy.asarray(10 * x), spec, hp)
    np.testing.assert_allclose(np.asarray(z1), np.asarray(z2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(10 * np.asarray(xh1), np.asarray(xh2), rtol=1e-4, atol=1e-4)


def test_groups_with_different_metrics_share_one_metrics_file(tmp_path):
    """Subspace groups log max_cos, moons groups do not: metrics.npz holds the union, NaN where
    a run's group has no such metric. (The subspaces group is test_kinds_sweep_analyze_and_plot's
    batchtopk group: its programs are compiled once for both.)"""
    raw = _raw(sweep={"grids": [{"task.geometry": ["subspaces"], "model.kind": ["batchtopk"]},
                                {"task.geometry": ["moons"], "task.dim": [2], "model.d_sae": [8],
                                 "model.k": [1]}]})
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    m = np.load(out / "metrics.npz")
    assert np.isfinite(m["max_cos_id"][0]).all() and np.isnan(m["max_cos_id"][1]).all()
    assert np.isfinite(m["fvu_id"]).all()
