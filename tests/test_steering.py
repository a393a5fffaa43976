"""Steering (`jaxsim steer`): methods, metrics and behaviours against independent ground truth,
and the command end to end (records, determinism, a run alone vs in its group, SAE steering)."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_raw

from jaxsim import api, cli, config, stages, testbeds
from jaxsim.config import ConfigError
from jaxsim.steering import config as steer_config
from jaxsim.steering import methods, metrics
from jaxsim.testbeds.pcfg import behaviours as pcfg_behaviours
from jaxsim.training.loop import model_of


def _acts(key, n=12, k=3, s=2, c=5, h=2, d=3, valid=None):
    ks = jax.random.split(key, 4)
    valid = jnp.ones(n, bool) if valid is None else valid
    return methods.Activations(jax.random.normal(ks[0], (n, k, s, c)),
                               jax.random.normal(ks[1], (n, k, s, c)),
                               jax.random.normal(ks[2], (n, k, s, h, d)),
                               jax.random.normal(ks[3], (n, k, s, h, d)), valid)


def test_caa_is_the_mean_difference_over_valid_prompts():
    valid = jnp.arange(12) % 3 != 0
    acts = _acts(jax.random.key(0), valid=valid)
    m, n, v = (np.asarray(a, np.float64) for a in acts[:2] + (valid,))
    v = v.astype(bool)
    expected = (m[v] - n[v]).reshape(-1, *m.shape[2:]).mean(0)
    np.testing.assert_allclose(np.asarray(methods.caa(acts)), expected, rtol=1e-5, atol=1e-6)


def test_iti_finds_the_one_informative_head():
    """Head 1 of layer 0 separates matching from non-matching along a known direction; the
    others are noise. The probe ranks it first, and its shift is sigma * theta."""
    n, d = 200, 4
    key = jax.random.key(1)
    acts = _acts(key, n=n, k=2, s=1, c=3, h=3, d=d)
    direction = jnp.array([0.6, 0.0, -0.8, 0.0])
    hm = acts.heads_match_NxKxSxHxD.at[:, :, 0, 1].add(1.5 * direction)
    acts = acts._replace(heads_match_NxKxSxHxD=hm)
    shift, acc = methods.iti(acts, 1)
    acc = np.asarray(acc)[0]
    assert acc[1] > 0.8 and acc[0] < 0.7 and acc[2] < 0.7
    assert np.abs(np.asarray(shift)[0, [0, 2]]).max() == 0.0
    theta = np.asarray(shift)[0, 1] / np.linalg.norm(np.asarray(shift)[0, 1])
    assert theta @ np.asarray(direction) > 0.9
    pos = np.asarray(acts.heads_match_NxKxSxHxD)[:, :, 0, 1].mean(1) @ theta
    neg = np.asarray(acts.heads_nonmatch_NxKxSxHxD)[:, :, 0, 1].mean(1) @ theta
    np.testing.assert_allclose(np.linalg.norm(np.asarray(shift)[0, 1]),
                               np.concatenate([pos, neg]).std(), rtol=1e-4)


def test_sae_direction_is_the_most_different_latent():
    rng = np.random.default_rng(0)
    codes_m, codes_n = rng.random((50, 6)), rng.random((50, 6))
    codes_m[:, 4] += 2.0
    decoder = rng.normal(size=(6, 3))
    latent, vec = methods.sae_direction(jnp.asarray(codes_m), jnp.asarray(codes_n),
                                        jnp.asarray(decoder))
    assert int(latent) == 4
    diff = codes_m[:, 4].mean() - codes_n[:, 4].mean()
    np.testing.assert_allclose(np.asarray(vec), diff * decoder[4], rtol=1e-5)


@pytest.fixture(scope="module")
def gpt():
    """A random 1-layer gpt on markov_mixture (N=4) with its spec, hparams and constants."""
    cfg = config.from_dict(tiny_raw())
    spec, hparams = stages.first_run(cfg)
    model = model_of(spec)
    params = model.init(jax.random.key(0), jnp.zeros((1, 15), jnp.int32))["params"]
    consts = testbeds.of(spec).constants(jax.random.key(0), spec, hparams)
    return spec, hparams, model, params, consts


def test_a_zero_intervention_changes_no_likelihood(gpt):
    spec, hparams, model, params, consts = gpt
    contrast = testbeds.of(spec).behaviours["chain"].build(jax.random.key(3), consts, spec,
                                                           hparams, 16, 4)
    zero = methods.Intervention(jnp.int32(0), jnp.zeros(16), jnp.zeros((2, 8)))
    lo0 = metrics.log_odds(model, params, contrast)
    lo = metrics.log_odds(model, params, contrast, metrics.steering_edit(zero, jnp.float32(5.0)))
    np.testing.assert_array_equal(np.asarray(lo), np.asarray(lo0))
    out = metrics.summarize(lo, lo0, contrast.valid_B, jnp.float32(1.0))
    assert float(out["delta"]) == 0.0 and float(out["shift"]) == 0.0


def _layer_norm(x, scale, bias):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-6) * scale + bias


def test_a_known_direction_gives_the_known_effect(gpt):
    """With the block's attention and MLP outputs zeroed, the model is logits =
    LN(embed + pos + m u) E^T: a plain-numpy forward pass gives the exact log-odds change of a
    one-token contrast (matching token a, non-matching b) under u = E[a] - E[b]; the metric
    recovers it, positive and growing with m."""
    spec, _, model, params, _ = gpt
    params = jax.tree.map(np.asarray, params)
    for name in ("attn", ):
        params["block0"][name]["out"]["kernel"] = np.zeros_like(params["block0"][name]["out"]["kernel"])
    params["block0"]["proj"]["kernel"] = np.zeros_like(params["block0"]["proj"]["kernel"])
    params["block0"]["attn"]["out"]["bias"] = np.zeros_like(params["block0"]["attn"]["out"]["bias"])
    params["block0"]["proj"]["bias"] = np.zeros_like(params["block0"]["proj"]["bias"])
    embed, pos = params["embed"]["embedding"], params["pos_embed"]
    a, b = 2, 3
    prompt = np.array([[1, 4, 0, 2, 1, 3]])
    match = np.concatenate([prompt, [[a]]], 1)
    nonmatch = np.concatenate([prompt, [[b]]], 1)
    target = np.zeros_like(match, bool)
    target[:, -1] = True
    contrast = (jnp.asarray(match), jnp.asarray(nonmatch), jnp.asarray(target),
                jnp.ones(1, bool))
    from jaxsim.testbed import Contrast
    contrast = Contrast(*contrast)
    u = embed[a] - embed[b]
    iv = methods.Intervention(jnp.int32(0), jnp.asarray(u), jnp.zeros((2, 8)))
    ln = params["ln_f"]

    def numpy_log_odds(m):
        x = embed[prompt[0, -1]] + pos[prompt.shape[1] - 1] + m * u
        logits = _layer_norm(x.astype(np.float64), ln["scale"], ln["bias"]) @ embed.T
        return logits[a] - logits[b]

    deltas = []
    lo0 = metrics.log_odds(model, params, contrast)
    for m in (0.5, 2.0, 8.0):
        lo = metrics.log_odds(model, params, contrast, metrics.steering_edit(iv, jnp.float32(m)))
        delta = float(lo[0] - lo0[0])
        np.testing.assert_allclose(delta, numpy_log_odds(m) - numpy_log_odds(0.0), rtol=1e-3,
                                   atol=1e-4)
        deltas.append(delta)
    assert 0 < deltas[0] < deltas[1] < deltas[2]


def test_a_head_shift_is_a_shift_of_the_attention_output_bias(gpt):
    """Adding delta_h to head h's output at every position is the same as adding delta_h's
    image under the output projection to that projection's bias (an independent route)."""
    spec, hparams, model, params, consts = gpt
    tokens = testbeds.of(spec).behaviours["chain"].build(jax.random.key(8), consts, spec,
                                                         hparams, 4, 4).match_BxT
    shift_HxD = jax.random.normal(jax.random.key(9), (2, 8)) * 0.05
    iv = methods.Intervention(jnp.int32(0), jnp.zeros(16), shift_HxD)
    steered = model.apply({"params": params}, tokens,
                          edit=metrics.steering_edit(iv, jnp.float32(3.0)))
    out = params["block0"]["attn"]["out"]
    moved = jax.tree.map(lambda a: a, params)
    moved["block0"]["attn"]["out"] = {**out, "bias": out["bias"] + 3.0 * shift_HxD.reshape(-1)
                                      @ out["kernel"]}
    np.testing.assert_allclose(np.asarray(steered),
                               np.asarray(model.apply({"params": moved}, tokens)),
                               rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(steered - model.apply({"params": params}, tokens))).max() > 1e-3


def test_random_directions_have_zero_mean_effect(gpt):
    """Over 400 random directions (uniform on the sphere) the mean delta is within 3 standard
    errors of zero, while single directions do move the log-odds. At a norm small against the
    residual stream (~0.1 here), where the effect is linear in the direction; a large one has
    a mean effect of its own (noise flattens the model's preferences: docs/steering.md)."""
    spec, hparams, model, params, consts = gpt
    contrast = testbeds.of(spec).behaviours["chain"].build(jax.random.key(5), consts, spec,
                                                           hparams, 32, 4)
    dirs = methods.random_directions(jax.random.key(6), jnp.array([0.002]), 400, 16)[:, 0]
    lo0 = metrics.log_odds(model, params, contrast)

    def delta(u):
        iv = methods.Intervention(jnp.int32(0), u, jnp.zeros((2, 8)))
        lo = metrics.log_odds(model, params, contrast, metrics.steering_edit(iv, jnp.float32(1)))
        return metrics.summarize(lo, lo0, contrast.valid_B, jnp.float32(1))["delta"]

    d = np.asarray(jax.jit(jax.vmap(delta))(dirs), np.float64)
    assert d.std() > 1e-6
    assert abs(d.mean()) < 3 * d.std() / np.sqrt(len(d))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(dirs), axis=1), 0.002, rtol=1e-5)


def test_chain_contrast_follows_chains_0_and_1(gpt):
    """Matching continuations are chain 0's transitions, non-matching chain 1's (empirical
    transition frequencies against the bank), both from the same prompt's last state."""
    spec, hparams, _, _, consts = gpt
    c = testbeds.of(spec).behaviours["chain"].build(jax.random.key(7), consts, spec, hparams,
                                                    3000, 6)
    m, n, t = (np.asarray(a) for a in (c.match_BxT, c.nonmatch_BxT, c.target_BxT))
    first = np.argmax(t[0])
    assert (t.sum(1) == 6).all() and (m[:, :first] == n[:, :first]).all()
    bank = np.asarray(consts.bank_NxKxK)
    for rows, chain in ((m, 0), (n, 1)):
        pairs = np.stack([rows[:, first - 1:-1].ravel(), rows[:, first:].ravel()], 1)
        counts = np.zeros_like(bank[0])
        np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
        freq = counts / counts.sum(1, keepdims=True)
        busy = counts.sum(1) > 500
        assert np.abs(freq[busy] - bank[chain][busy]).max() < 0.06


def _python_stack(tokens):
    stack = []
    for tok in tokens:
        if tok in (3, 4):
            stack.append(tok - 3)
        elif tok in (5, 6):
            assert stack and stack[-1] == tok - 5, "ungrammatical"
            stack.pop()
    return stack


def test_nest_contrast_opens_or_closes_the_innermost_brackets():
    cfg = config.from_dict({"task": {"name": "pcfg", "grammar": "dyck2", "context_length": 32}})
    spec, hparams = stages.first_run(cfg)
    k = 2
    # jitted: one compile instead of ~3x the CPU op by op (the same contrast, bit for bit)
    c = jax.jit(pcfg_behaviours.nest_contrast, static_argnums=(1, 2, 4, 5))(
        jax.random.key(0), (), spec, hparams, 200, k)
    m, n, t, v = (np.asarray(a) for a in c)
    assert 40 < v.sum() < 200
    for row in np.flatnonzero(v):
        at = np.flatnonzero(t[row])
        assert len(at) == k and (np.diff(at) == 1).all()
        prompt = m[row, 1:at[0]]
        assert (prompt == n[row, 1:at[0]]).all()
        stack = _python_stack(prompt)                 # raises on an ungrammatical prompt
        assert len(stack) >= k and at[0] - 1 + 2 * k + len(stack) <= 30
        assert set(m[row, at]) <= {3, 4}
        assert list(n[row, at]) == [5 + s for s in reversed(stack[-k:])]
        _python_stack(n[row, 1:at[-1] + 1])           # the closing stays grammatical
    assert not t[~v].any()


def test_steering_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="steer.multipliers"):
        steer_config.load(None, ["steer.multipliers=[-1]"])
    with pytest.raises(ConfigError, match="did you mean 'steer.layers'"):
        steer_config.load(None, ["steer.layer=[0]"])
    with pytest.raises(ConfigError, match="steer.sae"):
        steer_config.load(None, ["steer.methods=[sae]"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained source (N in {2, 4}, 2 seeds: runs 0-3) and SAEs on its block0."""
    root = tmp_path_factory.mktemp("steer")
    src = api.sweep(tiny_raw(train={"steps": 40, "eval_every": 20},
                             sweep={"seeds": 2, "axes": {"task.num_chains": [2, 4]}}),
                    out=root / "src", progress=False)
    sae = api.sweep(tiny_raw(task={"name": "activations", "site": "block0", "dim": 16},
                             model={"name": "sae", "kind": "topk", "d_sae": 32, "k": 2},
                             train={"steps": 20, "eval_every": 20, "batch_size": 64},
                             init={"source": str(src.dir)},
                             sweep={"axes": {"init.run": [1, 2]}}),
                    out=root / "sae", progress=False)
    return root, src.dir, sae.dir


STEER = {"steer": {"fit_prompts": 8, "eval_prompts": 8, "multipliers": [1.0, 4.0],
                   "random_directions": 2, "methods": ["caa", "iti", "sae", "random"]}}


def test_steer_writes_every_record_and_a_figure(trained, capsys):
    root, src, sae = trained
    path = root / "steer.yaml"
    path.write_text(yaml.safe_dump(STEER))
    assert cli.main(["steer", str(src), str(path), f"steer.sae={sae}",
                     "--out", str(root / "out")]) == 0
    err = capsys.readouterr().err
    assert "steering.csv" in err and "at multiplier 1, mean over 4 runs" in err
    frame = pd.read_csv(root / "out" / "steering.csv")
    table = pd.read_csv(root / "out" / "steering_summary.csv")
    caa = table[(table.method == "caa") & (table.direction == "promote")]
    rand = table[(table.method == "random") & (table.direction == "promote")]
    np.testing.assert_allclose(caa.delta_vs_random.to_numpy(),
                               caa.delta.to_numpy() - rand.delta.to_numpy(), atol=1e-6)
    assert (frame.resid_norm > 0).all()
    # the unsteered side-effect loss is the sweep's own logged held-out loss of each run
    logged = np.load(src / "metrics.npz")["eval_loss_id"][:, -1]
    np.testing.assert_allclose(frame.groupby("run_id").clean_loss.first().to_numpy(), logged,
                               rtol=1e-5)
    # 4 runs x (caa, iti: 1 layer each; random: 2) x 4 signed multipliers, + the SAE runs' own
    assert len(frame[frame.method != "sae"]) == 4 * 4 * 4
    sae_rows = frame[frame.method == "sae"]
    assert sorted(sae_rows.run_id.unique()) == [1, 2] and len(sae_rows) == 2 * 4
    assert set(sae_rows.variant) == {0, 1} and (sae_rows.latent >= 0).all()
    assert np.isfinite(frame[["delta", "shift", "side_effect", "norm"]].to_numpy()).all()
    assert set(frame.direction) == {"promote", "suppress"}
    assert (root / "out" / "figures" / "steering_chain.png").stat().st_size > 0
    vectors = np.load(root / "out" / "steering_vectors.npz")
    assert vectors["caa_g0"].shape == (4, 1, 16)


# caa and random directions at two multipliers: one steering program, compiled once for the two
# tests that steer every run of the source with it
STEER_CAA_RANDOM = {"steer": {**STEER["steer"], "methods": ["caa", "random"]}}


def test_steer_is_deterministic_and_a_run_alone_agrees(trained):
    root, src, _ = trained
    cfg = STEER_CAA_RANDOM
    a = api.steer(src, cfg, out=root / "a", figures=False)
    b = api.steer(src, cfg, out=root / "b", figures=False)
    one = api.steer(src, cfg, {"steer.runs": [2]}, out=root / "one", figures=False)
    fa, fb, fone = (pd.read_csv(d / "steering.csv") for d in (a, b, one))
    pd.testing.assert_frame_equal(fa, fb)
    cols = ["delta", "shift", "side_effect", "norm", "log_odds"]
    np.testing.assert_allclose(fa[fa.run_id == 2][cols].to_numpy(), fone[cols].to_numpy(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("override, needle", [
    ("steer.behaviour=nest", "not a behaviour of task.name=markov_mixture"),
    ("steer.layers=[3]", "has 1 blocks"),
    ("steer.runs=[9]", "not runs of the source"),
    ("steer.iti_heads=5", "model.num_heads=2"),
])
def test_bad_steering_input_exits_2_with_one_line(trained, capsys, override, needle):
    root, src, _ = trained
    path = root / "bad.yaml"
    path.write_text(yaml.safe_dump(STEER | {"steer": {**STEER["steer"], "methods": ["caa"]}}))
    assert cli.main(["steer", str(src), str(path), override, "--out",
                     str(root / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_the_output_directory_is_new_empty_or_a_steering_studys(trained, capsys):
    """A directory holding other files is refused with one line and left as it was; an
    interrupted study's directory (steer.yaml written first) is rerun into."""
    root, src, _ = trained
    cfg = STEER_CAA_RANDOM
    other = root / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no steering results"):
        api.steer(src, cfg, out=other, figures=False)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    cut = root / "cut"
    cut.mkdir()
    (cut / "steer.yaml").write_text(yaml.safe_dump(cfg))    # as an interrupted study leaves it
    done = api.steer(src, cfg, out=cut, figures=False)
    # 4 runs x (caa: 1 layer; random: 2) x 4 signed multipliers
    assert len(pd.read_csv(done / "steering.csv")) == 4 * 3 * 4
