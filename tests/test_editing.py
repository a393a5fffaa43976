"""Knowledge editing (`jaxsim edit`): ROME, MEMIT, AlphaEdit and the shattering metric against
closed forms computed in numpy, the value optimisation and the edits on a tiny random gpt."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim.editing import edits, methods, sites, values
from jaxsim.models.transformer import GPT


def _spd(rng, k, rank=None):
    a = rng.normal(size=(k, rank or 2 * k))
    return (a @ a.T / a.shape[1]).astype(np.float32)


def test_rome_update_is_the_closed_form_and_maps_the_key_to_its_value():
    rng = np.random.default_rng(0)
    k_dim, o_dim = 12, 5
    w, b = rng.normal(size=(k_dim, o_dim)), rng.normal(size=o_dim)
    cov, key, value = _spd(rng, k_dim), rng.normal(size=k_dim), rng.normal(size=o_dim)
    delta = np.asarray(methods.rome_delta(jnp.asarray(key, jnp.float32),
                                          jnp.asarray(key, jnp.float32),
                                          jnp.asarray(value - key @ w - b, jnp.float32),
                                          jnp.asarray(cov)), np.float64)
    c_inv_k = np.linalg.solve(cov, key)
    closed = np.outer(c_inv_k, value - key @ w - b) / (key @ c_inv_k)   # [K, O] convention
    np.testing.assert_allclose(delta, closed, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(key @ (w + delta) + b, value, atol=1e-4)
    # keys orthogonal to k* under C^-1 (k^T C^-1 k* = 0) map exactly as before
    others = rng.normal(size=(6, k_dim))
    others -= np.outer(others @ c_inv_k, c_inv_k) / (c_inv_k @ c_inv_k)
    np.testing.assert_allclose(others @ delta, 0.0, atol=1e-5)


def test_memit_with_one_edit_is_the_rank_one_least_squares_solution():
    """One edit, one layer: (λC + kkᵀ)⁻¹k rᵀ = C⁻¹k rᵀ / (λ + kᵀC⁻¹k) (Sherman-Morrison), and
    ROME's update as λ -> 0."""
    rng = np.random.default_rng(1)
    cov, key, resid = _spd(rng, 10), rng.normal(size=10), rng.normal(size=4)
    c_inv_k = np.linalg.solve(cov, key)
    for lam in (3.0, 1e-2):
        delta = np.asarray(methods.memit_delta(jnp.asarray(key[None], jnp.float32),
                                               jnp.asarray(resid[None], jnp.float32),
                                               jnp.asarray(cov), lam))
        np.testing.assert_allclose(delta, np.outer(c_inv_k, resid) / (lam + key @ c_inv_k),
                                   rtol=3e-3, atol=1e-5)
    rome = np.asarray(methods.rome_delta(*(jnp.asarray(a, jnp.float32) for a in
                                           (key, key, resid, cov))))
    shrink = lam / (lam + key @ c_inv_k)        # MEMIT's update is ROME's times (1 - shrink)
    assert 0 < shrink < 1e-3
    np.testing.assert_allclose(delta, rome * (1 - shrink), rtol=1e-3, atol=5e-5)


def test_batch_memit_writes_every_key_to_its_value():
    rng = np.random.default_rng(2)
    e, k_dim, o_dim = 6, 16, 5
    keys, resid = rng.normal(size=(e, k_dim)), rng.normal(size=(e, o_dim))
    cov = _spd(rng, k_dim)
    delta = np.asarray(methods.memit_delta(jnp.asarray(keys, jnp.float32),
                                           jnp.asarray(resid, jnp.float32), jnp.asarray(cov), 1e-4))
    np.testing.assert_allclose(keys @ delta, resid, atol=2e-3)
    # a large λ keeps the preserved keys: the update shrinks toward zero
    big = np.asarray(methods.memit_delta(jnp.asarray(keys, jnp.float32),
                                         jnp.asarray(resid, jnp.float32), jnp.asarray(cov), 1e6))
    assert np.abs(big).max() < 1e-3 * np.abs(delta).max()


def test_alphaedit_update_leaves_the_preserved_keys_untouched():
    rng = np.random.default_rng(3)
    k_dim, rank = 12, 7
    basis = np.linalg.qr(rng.normal(size=(k_dim, k_dim)))[0]
    preserved = rng.normal(size=(200, rank)) @ basis[:, :rank].T        # keys in a 7-dim span
    cov = (preserved.T @ preserved / 200).astype(np.float32)
    proj = np.asarray(methods.null_space_projector(jnp.asarray(cov), 1e-4))
    np.testing.assert_allclose(proj, basis[:, rank:] @ basis[:, rank:].T, atol=1e-4)
    keys, resid = rng.normal(size=(3, k_dim)), rng.normal(size=(3, 4))
    delta = np.asarray(methods.alphaedit_delta(jnp.asarray(keys, jnp.float32),
                                               jnp.asarray(resid, jnp.float32),
                                               jnp.asarray(proj), 1e-3))
    assert np.abs(preserved @ delta).max() < 5e-3 * np.abs(keys @ delta).max()
    # the edited keys' components in the null space are written (least squares there)
    null_keys = keys @ proj
    np.testing.assert_allclose(null_keys @ delta, resid, atol=2e-2)


def test_shattering_against_numpy():
    rng = np.random.default_rng(4)
    reps = rng.normal(size=(9, 5)).astype(np.float32)
    assert float(methods.shattering(jnp.asarray(reps), jnp.asarray(reps))) == 0.0
    moved = reps.copy()
    moved[2] += rng.normal(size=5).astype(np.float32) * 3
    d0 = np.linalg.norm(reps[:, None] - reps[None], axis=-1)
    d1 = np.linalg.norm(moved[:, None] - moved[None], axis=-1)
    expected = np.linalg.norm(d1 - d0) / np.linalg.norm(d0)
    np.testing.assert_allclose(float(methods.shattering(jnp.asarray(reps), jnp.asarray(moved))),
                               expected, rtol=1e-5)
    # an isometry (rotation and shift) does not shatter
    rot = np.linalg.qr(rng.normal(size=(5, 5)))[0].astype(np.float32)
    assert float(methods.shattering(jnp.asarray(reps), jnp.asarray(reps @ rot + 2))) < 1e-5


@pytest.fixture(scope="module")
def gpt():
    model = GPT(vocab_size=11, max_length=6, num_layers=2, d_model=16, num_heads=2, d_mlp=32)
    params = model.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))["params"]
    # larger weights than at init, so that the model can be confident (logits of order 10)
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a * (40 if "embedding" in str(path) else 5 if "kernel" in str(path)
                             else 1), params)
    rng = np.random.default_rng(5)
    tokens = jnp.asarray(rng.integers(0, 10, size=(4, 6)), jnp.int32)
    # the subject's token is the answer position: the edit reaches the logits without attention
    request = sites.Request(tokens, jnp.array([3, 4, 4, 3]), jnp.array([3, 4, 4, 3]),
                            jnp.int32(10), tokens[0].at[3].set(9), jnp.int32(3))
    return model, params, request


# the reference's lr and KL factor; its weight decay and clamp are scaled to this model's
# small MLP outputs (the decay term is relative to ‖v_0‖², not scale-free)
HP = values.ValueHparams(*(jnp.float32(v) for v in (0.5, 0.0625, 0.01, 100.0)))


def test_keys_are_the_mlp_hidden_activation(gpt):
    model, params, request = gpt
    reads = sites.read(model, params, request.tokens_PxT, 1)
    # the MLP output is the proj layer applied to the key
    proj = params["block1"]["proj"]
    np.testing.assert_allclose(reads.keys_BxTxK @ proj["kernel"] + proj["bias"][None, None],
                               reads.mlp_out_BxTxC, atol=1e-5)


def test_value_optimisation_raises_the_new_object(gpt):
    model, params, request = gpt
    before = jnp.exp(sites.target_log_probs(model.apply({"params": params}, request.tokens_PxT),
                                            request.answer_P, request.target)).mean()
    for layer, site in ((0, "mlp"), (1, "resid")):
        target, prob = jax.jit(lambda r, layer=layer, site=site: values.optimise_value(
            model, params, r, layer, 20, HP, site))(request)
        assert float(before) < 1e-3 and float(prob) > 0.9
        # the probability reported is the model's with v* in place of the value
        reads = sites.read(model, params, request.tokens_PxT, layer)
        init = sites.at(reads.mlp_out_BxTxC if site == "mlp" else reads.resid_BxTxC,
                        request.lookup_P[:1])[0]
        logits = model.apply({"params": params}, request.tokens_PxT,
                             edit=sites.add_at(layer, request.lookup_P, target - init))
        np.testing.assert_allclose(jnp.exp(sites.target_log_probs(
            logits, request.answer_P, request.target)).mean(), prob, rtol=1e-4)


def test_rome_in_the_model_writes_v_star_and_the_new_object(gpt):
    model, params, request = gpt
    edited, target = jax.jit(lambda r: (edits.rome(model, params, r, jnp.eye(32), 0, 20, HP)[0],
                                        values.optimise_value(model, params, r, 0, 20, HP,
                                                              "mlp")[0]))(request)
    after = sites.read(model, edited, request.tokens_PxT[:1], 0).mlp_out_BxTxC
    np.testing.assert_allclose(sites.at(after, request.lookup_P[:1])[0], target, atol=1e-4)
    logits = model.apply({"params": edited}, request.tokens_PxT)
    assert float(jnp.exp(sites.target_log_probs(logits, request.answer_P, request.target)[0])) > 0.9
    # only block 0's projection kernel moved
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, edited)
    assert [k for k, v in jax.tree_util.tree_leaves_with_path(moved) if v] and \
        sum(jax.tree.leaves(moved)) == 1 and bool(moved["block0"]["proj"]["kernel"])


def test_batch_edits_vmapped_equal_edits_one_at_a_time(gpt):
    model, params, request = gpt
    batch = jax.tree.map(lambda a: jnp.stack([a, a]), request)
    batch = batch._replace(target=jnp.array([10, 7], jnp.int32))
    cov = jnp.eye(32)
    one = jax.jit(lambda r: edits.rome(model, params, r, cov, 1, 8, HP)[0]["block1"]["proj"]["kernel"])
    many = jax.jit(jax.vmap(lambda r: edits.rome(model, params, r, cov, 1, 8, HP)[0]["block1"]["proj"]["kernel"]))(batch)
    for i in range(2):
        np.testing.assert_allclose(many[i], one(jax.tree.map(lambda a: a[i], batch)), atol=1e-5)


def test_memit_and_alphaedit_raise_the_new_objects(gpt):
    model, params, request = gpt
    batch = jax.tree.map(lambda a: jnp.stack([a, a]), request)
    batch = batch._replace(target=jnp.array([10, 7], jnp.int32),
                           tokens_PxT=batch.tokens_PxT.at[1, :, 2:4].set(9),
                           kl_T=batch.kl_T.at[1, 2].set(9))
    stats = edits.key_stats(model, params, batch.tokens_PxT.reshape(-1, 6), (0, 1), 1e-2)
    for l2 in (None, 1e-3):
        edited = jax.jit(lambda b, l2=l2: edits.memit(model, params, b, stats, (0, 1), 20, HP,
                                                      1e-3, l2)[0])(batch)
        for i in range(2):
            r = jax.tree.map(lambda a: a[i], batch)
            p = jnp.exp(sites.target_log_probs(model.apply({"params": edited}, r.tokens_PxT[:1]),
                                               r.answer_P[:1], r.target))[0]
            assert float(p) > 0.3, (l2, i, float(p))


def test_finetune_raises_the_new_object(gpt):
    model, params, request = gpt
    before = jnp.exp(sites.target_log_probs(model.apply({"params": params}, request.tokens_PxT),
                                            request.answer_P, request.target)).mean()
    prob = jax.jit(lambda r: edits.finetune(model, params, r, 1, 20, jnp.float32(5e-2))[1])(
        request)
    assert float(before) < 1e-3 and float(prob) > 0.5


def test_edit_config_errors_name_the_key():
    from jaxsim.config import ConfigError
    from jaxsim.editing import config as edit_config
    with pytest.raises(ConfigError, match="edit.methods"):
        edit_config.load(None, ["edit.methods=[rome,grace]"])
    with pytest.raises(ConfigError, match="did you mean 'edit.distances'"):
        edit_config.load(None, ["edit.distance=[1]"])
    with pytest.raises(ConfigError, match="edit.batch_size"):
        edit_config.load(None, ["edit.num_edits=10", "edit.batch_size=4"])
    with pytest.raises(ConfigError, match="edit.distances"):
        edit_config.load(None, ["edit.distances=[0, 2]"])
    with pytest.raises(ConfigError, match="edit.repr_site.*subject.*query"):
        edit_config.load(None, ["edit.repr_site=object"])


TINY_EDIT = {"edit": {"methods": ["rome", "finetune"], "distances": [1, 3], "num_edits": 3,
                      "batch_size": 1, "contexts": 2, "paraphrases": 2, "value_steps": 2,
                      "finetune_steps": 2, "finetune_lr": 1e-9, "cov_sequences": 4,
                      "eval_facts": 24, "repr_contexts": 1, "chunk": 3}}


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    """A tiny knowledge_graph sweep (2 runs), edited by ROME and by a fine-tuning that barely
    moves (lr 1e-9), then redrawn by `jaxsim plot`."""
    import jaxsim
    from conftest import tiny_raw
    root = tmp_path_factory.mktemp("edit")
    raw = tiny_raw(task={"name": "knowledge_graph", "num_entities": 12, "num_cycles": 2,
                         "max_hop": 2, "walk_length": 3},
                   model={"num_layers": 2}, train={"steps": 10, "eval_every": 10},
                   sweep={"seeds": 2, "checkpoint_every": 10})
    jaxsim.sweep(raw, out=root / "src", progress=False)
    out = jaxsim.edit(root / "src", TINY_EDIT, out=root / "edit")
    return out


def test_edit_writes_a_record_per_edit_and_figures(edited):
    import pandas as pd
    frame = pd.read_csv(edited / "edits.csv")
    assert len(frame) == 2 * 2 * 2 * 3            # runs x methods x distances x edits
    assert set(frame.method) == {"rome", "finetune"} and frame.efficacy.between(0, 1).all()
    for name in ("edits_shattering", "edits_accuracy", "edits_efficacy", "edits_pca"):
        assert (edited / "figures" / f"{name}.png").stat().st_size > 0
    summary = pd.read_csv(edited / "edits_summary.csv")
    assert len(summary) == 4 and (summary.edits == 6).all()


def test_edit_targets_sit_d_steps_beyond_the_object_on_the_cycle(edited):
    """The new object is d places beyond the old one along the relation's cycle (read from the
    run's cycles in edits.npz; relation r = cycle * 2h + j, steps +1..+h then -1..-h)."""
    import pandas as pd
    frame = pd.read_csv(edited / "edits.csv")
    arrays = np.load(edited / "edits.npz")
    h, n = 2, 12
    for row in frame.itertuples():
        order = arrays[f"order_{row.run_id}"]
        cycle, j = divmod(row.relation, 2 * h)
        sign = 1 if j < h else -1
        where = {int(e): p for p, e in enumerate(order[cycle])}
        assert (where[row.new_object] - where[row.old_object]) % n == (sign * row.distance) % n
        step = sign * (j % h + 1)
        assert (where[row.old_object] - where[row.subject]) % n == step % n


def test_an_edit_that_does_not_move_leaves_accuracy_and_geometry(edited):
    import pandas as pd
    frame = pd.read_csv(edited / "edits.csv")
    still = frame[frame.method == "finetune"]
    assert (still.shattering < 1e-4).all()
    for col in [c for c in frame.columns if c.startswith("acc_before_")]:
        after = col.replace("before", "after")
        both = still[[col, after]].dropna()
        np.testing.assert_array_equal(both[col], both[after])


def test_query_representations_and_their_shattering(edited):
    """edit.repr_site=query: the representation of entity e is, per cycle c, the residual after
    the last block at the relation token of e's prompts whose relation lies on c, averaged
    (checked by python loops over the prompts), the C cycles side by side; an edit that does
    not move leaves R = 0 there too, and ROME's edits move it."""
    import pandas as pd
    import yaml
    import jaxsim
    from jaxsim import stages
    from jaxsim.editing import driver, programs
    from jaxsim.training.loop import model_of
    from pathlib import Path
    from jaxsim import results
    from jaxsim.editing.config import from_dict
    source = yaml.safe_load((edited / "edit.yaml").read_text())["source"]
    cfg = from_dict({"edit": {**TINY_EDIT["edit"], "repr_site": "query", "repr_contexts": 2}})
    _, groups = results.read_plan(Path(source))
    spec = groups[0].spec
    layout = driver._layout(spec, cfg)
    frozen = stages.frozen_runs(source, [0], -1)
    params = jax.tree.map(lambda a: a[0], frozen["params"])
    hparams = jax.tree.map(lambda a: a[0], frozen["hparams"])
    setup, _, _ = programs._setup(spec, layout, params, hparams, frozen["seed"][0])
    edited_T, para = setup["rewrite_ExCxT"][0, 0], setup["para_ExPxT"][0]
    _, reps = programs._forward(spec, layout, params, setup, edited_T, para)
    n, width = 12, spec.model.d_model
    assert reps.shape == (n, 2 * width)
    _, acts = model_of(spec).apply({"params": params}, setup["repr_MxT"],
                                   return_activations=True)
    last = np.asarray(acts["block1"][:, -1])
    tokens = np.asarray(setup["repr_MxT"])
    cycle_of = np.asarray(setup["graph"].cycle_R)
    for e in range(n):
        for c in range(2):
            rows = [i for i in range(len(tokens)) if tokens[i, -2] == e
                    and cycle_of[tokens[i, -1] - n] == c]
            assert len(rows) == 2 * 4          # repr_contexts x 2h relations of the cycle
            assert np.allclose(reps[e, c * width:(c + 1) * width], last[rows].mean(0),
                               atol=1e-5)
    out = jaxsim.edit(source, TINY_EDIT, {"edit.repr_site": "query"},
                      out=edited.parent / "edit_query")
    frame = pd.read_csv(out / "edits.csv")
    assert (frame[frame.method == "finetune"].shattering < 1e-4).all()
    assert (frame[frame.method == "rome"].shattering > 1e-4).all()
    assert np.load(out / "edits.npz")["representations_0"].shape == (3, n, 2 * width)


def test_corrective_edits_fix_held_out_facts_the_model_gets_wrong(edited):
    """edit.kind=corrective: each edit is a held-out fact whose top-1 under the source model at
    its edited prompt is wrong (run here, outside the study), its target the true object (list
    arithmetic on the run's cycles); the records say so (wrong_before, fact_kind, distance 0)."""
    from pathlib import Path
    import pandas as pd
    import yaml
    import jaxsim
    from jaxsim import results, stages
    from jaxsim.config import ConfigError
    from jaxsim.editing import driver, programs
    from jaxsim.editing.config import from_dict
    from jaxsim.training.loop import model_of
    with pytest.raises(ConfigError, match="edit.kind.*counterfactual.*corrective"):
        from_dict({"edit": {"kind": "fix"}})
    source = yaml.safe_load((edited / "edit.yaml").read_text())["source"]
    cfg = from_dict({"edit": {**TINY_EDIT["edit"], "kind": "corrective"}})
    spec = results.read_plan(Path(source))[1][0].spec
    layout = driver._layout(spec, cfg)
    assert layout.distances == (0,)
    n, h = 12, 2
    for run in (0, 1):
        frozen = stages.frozen_runs(source, [run], -1)
        params = jax.tree.map(lambda a: a[0], frozen["params"])
        hparams = jax.tree.map(lambda a: a[0], frozen["hparams"])
        setup, _, _ = programs._setup(spec, layout, params, hparams, frozen["seed"][0])
        g = setup["graph"]
        order = np.asarray(g.order_CxN).tolist()
        logits = model_of(spec).apply({"params": params}, setup["rewrite_ExCxT"][:, 0])
        top = np.asarray(logits[:, -1].argmax(-1))
        for e in range(3):
            s, r = int(setup["subject_E"][e]), int(setup["relation_E"][e])
            cycle, j = divmod(r, 2 * h)
            step = (j % h + 1) * (1 if j < h else -1)
            truth = order[cycle][(order[cycle].index(s) + step) % n]
            assert int(setup["targets_DxE"][0, e]) == truth
            assert int(g.kind_NxR[s, r]) in (1, 2)          # held out
            assert bool(setup["wrong_before_E"][e]) == (top[e] != truth)
            assert int(setup["rewrite_ExCxT"][e, 0, -2]) == s
    out = jaxsim.edit(source, TINY_EDIT, {"edit.kind": "corrective"},
                      out=edited.parent / "edit_corrective")
    frame = pd.read_csv(out / "edits.csv")
    assert (frame.distance == 0).all() and frame.fact_kind.isin([1, 2]).all()
    assert len(frame) == 2 * 2 * 3 and frame.wrong_before.isin([0, 1]).all()
