"""Matrix completion: the generator against its definition, the encoder's MLM contracts, the
plateau rule on curves with known answers, the baselines against known low-rank solutions."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim import cli, training
import jaxsim.testbeds as testbeds
from jaxsim import config as cfglib
from jaxsim.testbeds.matrix_completion import diagnostics as completion
from jaxsim.testbeds.matrix_completion import plateau as plateau
from jaxsim.testbeds.matrix_completion import task as mc

MC = {"task": {"name": "matrix_completion", "matrix_size": 5, "rank": 2},
      "model": {"name": "encoder", "num_layers": 1, "d_model": 16, "num_heads": 2, "d_mlp": 32},
      "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "eval_batch_size": 16,
                "weight_decay": 0.0, "grad_clip": 0.0},
      "sweep": {"seeds": 1, "checkpoint_every": 10, "plot": False}}


def _setup(**task):
    raw = {k: dict(v) for k, v in MC.items()}
    raw["task"].update(task)
    cfg = cfglib.from_dict(raw)
    return cfg, cfglib.spec_of(cfg), training.as_arrays(cfglib.hparams_of(cfg))


def _sample(batch_size, key=0, **task):
    _, spec, hp = _setup(**task)
    return mc.sample(jax.random.key(key), (), spec, hp, batch_size)


def test_matrices_have_the_rank_mask_rate_variance_and_tokens():
    b = _sample(2000, rank=2, mask_prob=0.3)
    x = np.asarray(b.values_BxP).reshape(-1, 5, 5)
    s = np.linalg.svd(x, compute_uv=False)
    assert np.all(s[:, 2:] < 0.05) and np.median(s[:, 1]) > 0.3   # rank 2 up to 0.01 rounding
    np.testing.assert_allclose(np.round(x * 100), x * 100, atol=1e-3)   # on the 0.01 grid
    assert abs(np.asarray(b.masked_BxP).mean() - 0.3) < 0.01
    # Var(sum_r u_r v_r) = r Var(u)^2 = 2 / 9 for U[-1, 1] factors
    assert abs(x.var() - mc.entry_variance(2, "uniform", 1.0)) < 0.01
    tokens = np.asarray(b.tokens_BxP)
    masked = np.asarray(b.masked_BxP)
    assert np.all(tokens[masked] == mc.MASK_TOKEN)
    np.testing.assert_allclose((tokens[~masked] - 1001) / 100, np.asarray(b.values_BxP)[~masked],
                               atol=1e-6)


def test_factors_give_exactly_rank_r_before_rounding():
    for r in (1, 2, 3):
        _, spec, hp = _setup(rank=r)
        u = np.asarray(mc.factors(jax.random.key(0), spec, hp, 32), np.float64)
        v = np.asarray(mc.factors(jax.random.key(1), spec, hp, 32), np.float64)
        assert all(np.linalg.matrix_rank(a @ b.T, tol=1e-6) == r for a, b in zip(u, v))


def test_per_run_rank_is_a_mask_over_the_group_maximum():
    """A rank-1 run compiled with a rank-3 bank draws the same matrices as alone."""
    _, alone_spec, alone_hp = _setup(rank=1)
    _, big_spec, big_hp = _setup(rank=3)
    big_hp = jax.tree.map(lambda a: a, big_hp)
    big_hp["task"]["rank"] = jnp.asarray(1, jnp.int32)
    key = jax.random.key(4)
    a = mc.sample(key, (), alone_spec, alone_hp, 16)
    b = mc.sample(key, (), big_spec, big_hp, 16)
    np.testing.assert_array_equal(np.asarray(a.values_BxP), np.asarray(b.values_BxP))
    np.testing.assert_array_equal(np.asarray(a.tokens_BxP), np.asarray(b.tokens_BxP))


@pytest.mark.parametrize("dist,scale", [("gaussian", 0.5), ("laplace", 0.25)])
def test_out_of_distribution_factors(dist, scale):
    x = np.asarray(_sample(4000, rank=1, factor_dist=dist, factor_scale=scale).values_BxP)
    assert abs(x.var() / mc.entry_variance(1, dist, scale) - 1) < 0.15


def test_copy_baseline_is_the_analytic_plateau():
    """Copy observed, predict 0 for masked: all-entry MSE = p Var, masked MSE = Var."""
    b = _sample(4000, rank=2, mask_prob=0.3)
    m = testbeds.get("matrix_completion").objective.evaluate(testbeds.matrix_completion.copy_baseline(b), b)
    var = mc.entry_variance(2, "uniform", 1.0)
    assert abs(float(m["eval_mse"]) - 0.3 * var) < 0.005
    assert abs(float(m["eval_mse_masked"]) - var) < 0.01
    assert float(m["eval_mse_observed"]) == 0.0
    assert float(m["copy_mse"]) == pytest.approx(float(m["eval_mse"]))


def test_encoder_is_bidirectional_and_mask_embedding_is_fixed_at_zero():
    cfg, spec, hp = _setup()
    state = training.init(jax.random.key(0), spec, hp)
    model = training.loop.model_of(spec)
    b = _sample(4)
    preds = model.apply({"params": state["params"]}, b.tokens_BxP, b.values_BxP)
    assert preds.shape == (4, 25)
    changed = b.tokens_BxP.at[:, -1].set(1500)
    moved = model.apply({"params": state["params"]}, changed, b.values_BxP)
    assert np.abs(np.asarray(moved - preds)[:, 0]).max() > 0   # position 0 sees the last entry
    grads = jax.grad(training.loop.loss_fn)(state["params"], spec, b)
    assert np.all(np.asarray(grads["embed"][mc.MASK_TOKEN]) == 0)
    assert np.abs(np.asarray(grads["embed"])).sum() > 0


@pytest.mark.parametrize("norm,inputs", [("post", "tokens"), ("pre", "continuous")])
def test_encoder_variants_train(norm, inputs):
    raw = {k: dict(v) for k, v in MC.items()}
    raw["model"].update(norm=norm, input=inputs)
    raw["train"].update(steps=60, eval_every=60, lr=3e-3, batch_size=32)
    cfg = cfglib.from_dict(raw)
    spec, hp = cfglib.spec_of(cfg), training.as_arrays(cfglib.hparams_of(cfg))
    _, m = jax.jit(training.train, static_argnums=1)(jax.random.key(0), spec, hp)
    # from the untrained level (about the entry variance) towards the copy solution
    assert float(m["eval_mse_id"][-1]) < 0.6 * mc.entry_variance(2, "uniform", 1.0)


def test_plateau_rule_on_curves_with_known_answers():
    steps = np.arange(0, 1100, 100)
    copy, copy_masked = 0.067, 0.22
    masked = np.array([0.3, 0.23, 0.22, 0.22, 0.22, 0.2, 0.15, 0.05, 0.01, 0.005, 0.005])
    mse = 0.3 * masked
    mse[0] = 0.25
    found = plateau.detect(steps, mse, masked, np.full(11, copy), np.full(11, copy_masked))
    assert found["start"] == 100 and found["end"] == 700 and found["length"] == 600
    assert found["dropped"] and found["drop_width"] == 200   # 0.8x at 600 (0.15), 0.2x at 800
    stuck = plateau.detect(steps, np.full(11, copy), np.full(11, copy_masked),
                           np.full(11, copy), np.full(11, copy_masked))
    assert stuck["start"] == 0 and stuck["end"] is None and not stuck["dropped"]
    assert stuck["length"] == 1000
    rng = np.random.default_rng(0)     # noisy: 10% jitter on the plateau must not fake a drop
    jitter = 1 + 0.1 * rng.uniform(-1, 1, 11)
    noisy = plateau.detect(steps, mse * jitter, masked * jitter, np.full(11, copy),
                           np.full(11, copy_masked))
    assert noisy["start"] == 100 and noisy["end"] == 700


def test_soft_impute_recovers_exactly_low_rank_matrices():
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-1, 1, (64, 6, 1)), rng.uniform(-1, 1, (64, 6, 1))
    x = (u @ v.transpose(0, 2, 1)).astype(np.float32)
    observed = rng.uniform(size=x.shape) > 0.2
    z = np.asarray(jax.jit(completion.soft_impute, static_argnums=(2, 3))(
        jnp.asarray(x), jnp.asarray(observed), 1e-4, 500))
    masked_err = ((z - x) ** 2)[~observed]
    assert np.median(masked_err) < 1e-4 and masked_err.mean() < 1e-2


def test_rank1_minors_complete_rank1_matrices_by_their_2x2_minors():
    # a hand case: [[2, 3], [4, ?]] has the one minor 3 * 4 / 2 = 6
    x = jnp.asarray([[[2.0, 3.0], [4.0, 99.0]]])
    obs = jnp.asarray([[[True, True], [True, False]]])
    assert np.asarray(completion.rank1_minors(x, obs))[0, 1, 1] == pytest.approx(6.0)
    # noiseless rank-1 matrices: every masked entry with a minor is recovered; observed entries
    # are kept; a masked entry with none (its whole row masked) gets the mean 0
    rng = np.random.default_rng(1)
    u, v = rng.uniform(0.2, 1, (128, 5, 1)), rng.uniform(-1, 1, (128, 5, 1))
    x = (u @ v.transpose(0, 2, 1)).astype(np.float64)
    observed = rng.uniform(size=x.shape) > 0.25
    observed[:, 0, :] = False                                  # row 0 has no observed entry
    z = np.asarray(completion.rank1_minors(jnp.asarray(x, jnp.float32), jnp.asarray(observed)))
    has = np.einsum("bik,blj,blk->bij", observed, observed, observed) > 0
    masked = ~observed
    np.testing.assert_allclose(z[observed], x[observed], rtol=1e-6)
    np.testing.assert_allclose(z[masked & has], x[masked & has], rtol=1e-3, atol=1e-5)
    assert (masked & has).sum() > 500 and np.all(z[:, 0, :] == 0.0) and not has[:, 0].any()
    assert np.all(z[masked & ~has] == 0.0)
    base = completion.rank1_minors_baseline(jnp.asarray(x.reshape(128, 25), jnp.float32),
                                            jnp.asarray(masked.reshape(128, 25)))
    expected = (x[masked & ~has] ** 2).sum() / masked.sum()    # unsolved entries count x^2
    assert float(base["mse_masked"]) == pytest.approx(expected, rel=1e-3)


def test_row_column_scores_and_probe_on_known_cases():
    n = 3
    pos = np.arange(n * n)
    same_row = (pos[:, None] // n == pos[None] // n) & (pos[:, None] != pos[None])
    attn = same_row / same_row.sum(-1, keepdims=True)
    rows, cols = completion.row_col_scores(jnp.asarray(attn[None], jnp.float32), n)
    assert float(rows[0]) == pytest.approx(1.0) and float(cols[0]) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(n, 8))
    h = np.tile(codes[pos // n][None], (40, 1, 1)) + 0.05 * rng.normal(size=(40, n * n, 8))
    acc = completion.ridge_probe_accuracy(jnp.asarray(h, jnp.float32), jnp.asarray(pos // n), n)
    assert float(acc) == 1.0
    noise = jnp.asarray(rng.normal(size=(40, n * n, 8)), jnp.float32)
    assert float(completion.ridge_probe_accuracy(noise, jnp.asarray(pos // n), n)) < 0.6


def test_cli_sweep_analyze_plot(tmp_path):
    import yaml
    raw = {k: dict(v) for k, v in MC.items()}
    raw["sweep"]["axes"] = {"task.mask_prob": [0.2, 0.4]}
    path = tmp_path / "mc.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 0
    assert cli.main(["analyze", str(out), "--sequences", "16"]) == 0
    assert cli.main(["plot", str(out)]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["task"] == "matrix_completion" and len(doc["runs"]) == 2
    for run in doc["runs"]:
        assert set(run["plateau"]) >= {"start", "end", "length", "dropped", "final_loss"}
        assert len(run["diagnostics"]["row_score"]) == len(run["steps"])
        assert run["baselines"]["nuclear_mse"] < run["baselines"]["copy_mse"]
        assert run["baselines"]["rank1_minors_mse"] is None          # MC is rank 2
    for name in ("loss_curves.png", "plateau_length.png", "attention_maps.png"):
        assert (out / "figures" / name).stat().st_size > 0
    with np.load(out / "analysis_attention.npz") as f:
        assert f["attention"].shape == (2, 2, 1, 2, 25, 25)
        np.testing.assert_allclose(f["attention"].sum(-1), 1.0, atol=1e-5)


def test_bad_matrix_completion_configs():
    with pytest.raises(cfglib.ConfigError, match="task.rank"):
        _setup(rank=6)
    with pytest.raises(cfglib.ConfigError, match="model.name=encoder"):
        cfglib.from_dict({"task": {"name": "matrix_completion"}, "model": {"name": "gpt"}})
    # without model.name, the testbed's default pairing
    assert cfglib.from_dict({"task": {"name": "matrix_completion"}}).model.name == "encoder"
    with pytest.raises(cfglib.ConfigError, match="task.mask_prob"):
        _setup(mask_prob=1.5)
