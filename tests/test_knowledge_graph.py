"""Knowledge graph: facts against a brute-force enumeration of the cycles, the held-out design
against its definition, walks and prompts made only of trained facts, edit targets and moves
against list arithmetic, the geometry helpers on planted rings, bad configs, and the CLI sweep,
analysis and figures end to end."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim import cli, training
from jaxsim import config as cfglib
from jaxsim.testbeds.knowledge_graph import facts, geometry, task

KG = {"task": {"name": "knowledge_graph", "num_entities": 12, "num_cycles": 2, "max_hop": 2,
               "walk_length": 5, "logical_frac": 0.3, "compositional_frac": 0.3},
      "model": {"name": "gpt", "num_layers": 1, "d_model": 16, "num_heads": 2, "d_mlp": 32},
      "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "eval_batch_size": 16},
      "sweep": {"seeds": 1, "checkpoint_every": 10, "plot": False}}


def _setup(**task_keys):
    raw = {k: dict(v) for k, v in KG.items()}
    raw["task"].update(task_keys)
    cfg = cfglib.from_dict(raw)
    return cfg, cfglib.spec_of(cfg), training.as_arrays(cfglib.hparams_of(cfg))


def _graph(seed=0, **task_keys):
    """The run's Graph (numpy arrays: python loops over them stay cheap), spec, hparams."""
    _, spec, hp = _setup(**task_keys)
    g = jax.jit(facts.constants, static_argnums=1)(jax.random.key(seed), spec, hp)
    return jax.device_get(g), spec, hp


def _brute(g):
    """Every fact from the cycles as python lists: {(e, r): object} and relation metadata."""
    order = np.asarray(g.order_CxN).tolist()
    n, num_rel = np.asarray(g.object_NxR).shape
    h = num_rel // (2 * len(order))
    rel = [(c, s) for c in range(len(order)) for s in [*range(1, h + 1), *range(-1, -h - 1, -1)]]
    obj = {(e, r): order[c][(order[c].index(e) + s) % n]
           for e in range(n) for r, (c, s) in enumerate(rel)}
    return order, rel, obj


@pytest.mark.parametrize("seed,n,c,h", [(0, 12, 2, 2), (1, 9, 3, 1), (2, 16, 1, 3)])
def test_facts_against_brute_force(seed, n, c, h):
    g, _, _ = _graph(seed, num_entities=n, num_cycles=c, max_hop=h,
                     compositional_frac=0.3 if h >= 2 else 0.0)
    order, rel, obj = _brute(g)
    assert all(sorted(cyc) == list(range(n)) for cyc in order)
    assert [(int(a), int(b)) for a, b in zip(g.cycle_R, g.step_R)] == rel
    for e in range(n):
        for cc in range(c):
            assert order[cc][int(g.position_CxN[cc, e])] == e
        for r in range(len(rel)):
            assert int(g.object_NxR[e, r]) == obj[(e, r)]
            inv = int(g.inverse_R[r])
            assert rel[inv] == (rel[r][0], -rel[r][1]) and obj[(obj[(e, r)], inv)] == e
    other, _, _ = _graph(seed + 10, num_entities=n, num_cycles=c, max_hop=h,
                         compositional_frac=0.3 if h >= 2 else 0.0)
    assert not np.array_equal(other.order_CxN, g.order_CxN)   # another seed, another graph


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_held_out_design_by_definition(seed):
    g, _, _ = _graph(seed, num_entities=20, num_cycles=3, max_hop=3, logical_frac=0.4,
                     compositional_frac=0.3)
    order, rel, obj = _brute(g)
    kind = np.asarray(g.kind_NxR)
    rid = {v: i for i, v in enumerate(rel)}
    trained = lambda e, r: kind[e, r] == facts.TRAINED       # noqa: E731
    assert (kind == facts.LOGICAL).sum() > 0 and (kind == facts.COMPOSITIONAL).sum() > 0
    for e in range(20):
        assert trained(e, rid[(0, 1)]) and trained(e, rid[(0, -1)])   # cycle 0's +-1 facts
        for r, (c, s) in enumerate(rel):
            o, inv = obj[(e, r)], rid[(c, -s)]
            if kind[e, r] == facts.LOGICAL:            # its inverse is a trained fact
                assert trained(o, inv)
            if kind[e, r] == facts.COMPOSITIONAL:      # a hop-2 fact, inverse held out too,
                assert abs(s) == 2 and kind[o, inv] == facts.COMPOSITIONAL
                one = rid[(c, int(np.sign(s)))]        # = two trained hops of 1 the same way
                mid = obj[(e, one)]
                assert trained(e, one) and trained(mid, one) and obj[(mid, one)] == o


def _triples(tokens_BxL, n):
    """(subject, relation, object) steps of token rows e r e r ... e."""
    t = np.asarray(tokens_BxL)
    return np.stack([t[:, 0:-1:2], t[:, 1::2] - n, t[:, 2::2]], -1)


def test_training_walks_are_valid_and_never_use_held_out_facts():
    g, spec, hp = _graph(3, logical_frac=0.5, compositional_frac=0.5)
    kind, obj, inv = map(np.asarray, (g.kind_NxR, g.object_NxR, g.inverse_R))
    batches = jax.jit(jax.vmap(lambda s: task.train_batch(g, jax.random.key(3), s, spec, hp)))(
        jnp.arange(200))
    tokens = np.asarray(batches.tokens_BxL).reshape(-1, 11)
    steps = _triples(tokens, 12)
    e, r, o = steps[..., 0], steps[..., 1], steps[..., 2]
    assert ((r >= 0) & (r < 8)).all() and (tokens[:, ::2] < 12).all()
    assert (obj[e, r] == o).all()                       # each step is a true fact
    assert (kind[e, r] == facts.TRAINED).all()          # and a trained one
    assert (r[:, 1:] != inv[r[:, :-1]]).all()           # never straight back
    used = np.zeros_like(kind, bool)
    used[e.ravel(), r.ravel()] = True
    assert used[kind == facts.TRAINED].mean() > 0.95    # the walks cover the trained facts
    mask = np.asarray(batches.loss_mask_BxL)[0, 0]
    assert mask.tolist() == [False, False, True, False, True, False, True, False, True, False,
                             True]


def test_fact_prompts_end_with_the_fact_after_a_trained_walk():
    g, spec, hp = _graph(4)
    kind, obj, inv = map(np.asarray, (g.kind_NxR, g.object_NxR, g.inverse_R))
    subject = jnp.repeat(jnp.arange(12), 8)
    relation = jnp.tile(jnp.arange(8), 12)
    prompt = jax.jit(facts.fact_prompts, static_argnums=(2, 6))
    tokens, answer = prompt(jax.random.key(0), g, spec, hp, subject, relation, 3)
    other, _ = prompt(jax.random.key(1), g, spec, hp, subject, relation, 3)
    tokens = np.asarray(tokens)
    assert tokens.shape == (96, 8) and (np.asarray(answer) == 7).all()
    assert (tokens[:, 6] == np.asarray(subject)).all()          # subject at answer_index - 1
    assert (tokens[:, 7] == 12 + np.asarray(relation)).all()
    steps = _triples(tokens[:, :7], 12)
    e, r, o = steps[..., 0], steps[..., 1], steps[..., 2]
    assert (obj[e, r] == o).all() and (kind[e, r] == facts.TRAINED).all()
    rels = np.concatenate([r, np.asarray(relation)[:, None]], 1)
    assert (rels[:, 1:] != inv[rels[:, :-1]]).all()              # no step back, query included
    assert (np.asarray(other) != tokens).any(axis=1).mean() > 0.5   # other key, other context
    # evaluation batches: the split's facts, the answer last and the only scored token
    eval_batch = jax.jit(task.eval_batch, static_argnums=(2, 4))
    for k, split in enumerate(task.SPLITS):
        batch = eval_batch(g, jax.random.key(4), spec, hp, split)
        t = np.asarray(batch.tokens_BxL)
        assert (kind[t[:, -3], t[:, -2] - 12] == k).all()
        assert (obj[t[:, -3], t[:, -2] - 12] == t[:, -1]).all()
        assert np.asarray(batch.loss_mask_BxL).sum(1).tolist() == [1] * 16


def test_empty_split_reports_nan():
    g, spec, hp = _graph(0, compositional_frac=0.0)
    batch = jax.jit(task.eval_batch, static_argnums=(2, 4))(g, jax.random.key(0), spec, hp,
                                                             "compositional")
    out = task.evaluate(jnp.zeros((16, 10, 20)), batch)
    assert np.isnan(out["accuracy"]) and np.isnan(out["loss"])


def test_edit_target_and_moved_against_list_arithmetic():
    g, _, _ = _graph(5)
    order, rel, obj = _brute(g)
    e, r, d = np.meshgrid(np.arange(12), np.arange(8), np.array([-2, 0, 1, 3]), indexing="ij")
    got = np.asarray(jax.jit(facts.edit_target)(g, e, r, d))
    for i, j, k in np.ndindex(got.shape):
        c, s = rel[r[i, j, k]]
        want = order[c][(order[c].index(obj[(i, j)]) + int(np.sign(s)) * d[i, j, k]) % 12]
        assert got[i, j, k] == want
    for c, ent, new in [(0, 3, 7), (1, 5, 0), (1, 8, 11), (0, 2, int(g.position_CxN[0, 2]))]:
        cyc = list(order[c])
        cyc.remove(ent)
        cyc.insert(new, ent)
        m = jax.device_get(jax.jit(facts.moved)(g, c, ent, new))
        assert np.asarray(m.order_CxN[c]).tolist() == cyc
        assert np.array_equal(m.order_CxN[1 - c], g.order_CxN[1 - c])
        _, _, moved_obj = _brute(m)
        assert all(int(m.object_NxR[e, r]) == v for (e, r), v in moved_obj.items())


def test_geometry_on_planted_rings():
    rng = np.random.default_rng(0)
    n = 40
    position = np.stack([rng.permutation(n), rng.permutation(n)])
    basis = np.linalg.qr(rng.normal(size=(32, 4)))[0]
    ring = lambda p: np.stack([np.cos(2 * np.pi * p / n), np.sin(2 * np.pi * p / n)], 1)  # noqa
    x = np.concatenate([ring(position[0]), 0.01 * ring(position[1])], 1) @ basis.T
    r2 = geometry.ring_r2(x, position)
    assert r2[0] > 0.99 and r2[1] < 0.05     # cross-validated: chance is about 0
    assert geometry.ring_r2(rng.normal(size=(n, 32)), position).max() < 0.05
    xy, share = geometry.pca2(x)
    assert share[0] > 0.49 and np.allclose(np.linalg.norm(xy, axis=1), 1.0, atol=1e-3)
    iso = geometry.isomap2(ring(np.arange(n)) @ basis[:, :2].T + 0.001 * rng.normal(size=(n, 32)))
    turn = np.unwrap(np.arctan2(iso[:, 1], iso[:, 0]))   # the order goes once around
    assert abs(abs(turn[-1] - turn[0]) - 2 * np.pi * (n - 1) / n) < 0.3
    d = geometry.pairwise_distances(x)
    assert np.allclose(d, np.linalg.norm(x[:, None] - x[None], axis=-1))


def test_ring_neighbours_on_a_curve_hidden_by_other_variance():
    """A closed curve in cycle order (frequencies 1 and 3, not an ellipse) beside 30 directions
    of small per-entity noise: every entity's 4 nearest neighbours are its cycle neighbours
    within 2 (score 1) although a linear ring explains little of the variance; for the other
    cycle and for Gaussian points the score is near chance 4 / (n - 1)."""
    rng = np.random.default_rng(1)
    n = 60
    position = np.stack([rng.permutation(n), rng.permutation(n)])
    angle = 2 * np.pi * position[0] / n
    curve = np.stack([np.cos(angle), np.sin(angle), np.cos(3 * angle), np.sin(3 * angle)], 1)
    x = np.concatenate([3 * curve, 0.02 * rng.normal(size=(n, 30))], 1)
    score = geometry.ring_neighbours(x, position)
    chance = geometry.ring_neighbours_chance(n)
    assert chance == pytest.approx(4 / 59)
    assert score[0] == 1.0 and score[1] < 3 * chance
    # brute force: the share of 4 nearest (by a python sort) within 2 positions on cycle 1
    near = [sorted((float(np.linalg.norm(x[i] - x[j])), j) for j in range(n) if j != i)[:4]
            for i in range(n)]
    gaps = [min(abs(position[1][i] - position[1][j]), n - abs(position[1][i] - position[1][j]))
            for i in range(n) for _, j in near[i]]
    assert score[1] == pytest.approx(np.mean(np.array(gaps) <= 2))
    noise = np.mean([geometry.ring_neighbours(rng.normal(size=(n, 16)), position).mean()
                     for _ in range(20)])
    assert abs(noise - chance) < 0.03


def test_bad_configs_name_the_key():
    with pytest.raises(cfglib.ConfigError, match="task.max_hop"):
        _setup(num_entities=8, max_hop=4)
    with pytest.raises(cfglib.ConfigError, match="task.logical_frac"):
        _setup(logical_frac=1.5)
    with pytest.raises(cfglib.ConfigError, match="task.compositional_frac"):
        _setup(compositional_frac=-0.1)
    with pytest.raises(cfglib.ConfigError, match="task.compositional_frac"):
        _setup(max_hop=1)


def test_cli_sweep_analyze_plot(tmp_path):
    import yaml
    raw = {k: dict(v) for k, v in KG.items()}
    raw["sweep"]["axes"] = {"task.logical_frac": [0.2, 0.4]}
    path = tmp_path / "kg.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 0
    with np.load(out / "metrics.npz") as m:
        for split in task.SPLITS:
            assert m[f"accuracy_{split}"].shape == m[f"loss_{split}"].shape == (2, 2)
            assert np.isfinite(m[f"loss_{split}"]).all()
    assert cli.main(["analyze", str(out), "--sequences", "32"]) == 0
    assert cli.main(["plot", str(out)]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["sites"] == ["embed", "block0"] and doc["contexts"] == 2
    assert doc["query_sites"] == ["query0"]
    with np.load(out / "analysis_representations.npz") as f:
        assert f["representations"].shape == (2, 2, 2, 12, 16)
        assert f["query_representations"].shape == (2, 2, 1, 2, 12, 16)
        assert f["fact_accuracy"].shape == (2, 2, 12, 8)
        for i, run in enumerate(doc["runs"]):
            kind, acc = f["kind"][i], f["fact_accuracy"][i]
            g, _, _ = _graph(run["seed"], logical_frac=run["axes"]["task.logical_frac"])
            assert np.array_equal(kind, g.kind_NxR) and np.array_equal(f["order"][i],
                                                                       g.order_CxN)
            for k, split in enumerate(task.SPLITS):
                assert run["num_facts"][split] == (kind == k).sum()
                assert np.allclose(run["accuracy"][split], acc[:, kind == k].mean(1))
            query = f["query_representations"][i]
            for s in range(2):
                for c in range(2):
                    assert run["ring_neighbours_query"][s][0][c] == pytest.approx(
                        geometry.ring_neighbours(query[s, 0, c], g.position_CxN[c:c + 1])[0])
                    assert run["ring_neighbours"][s][1][c] == pytest.approx(
                        geometry.ring_neighbours(f["representations"][i, s, 1],
                                                 g.position_CxN)[c])
    for name in ("knowledge_accuracy.png", "knowledge_exact.png", "knowledge_pca.png",
                 "knowledge_isomap.png"):
        assert (out / "figures" / name).stat().st_size > 0


def test_query_representations_average_the_relation_token_over_the_cycle():
    """analyze_run's query representation of entity e on cycle c equals, by python loops, the
    residual after each block at the last (relation) token of the prompts whose subject is e and
    whose relation lies on cycle c, averaged; the subject site is the subject token's."""
    from jaxsim.testbeds.knowledge_graph import analysis
    from jaxsim.training import loop
    _, spec, hp = _setup()
    model = loop.model_of(spec)
    params = model.init(jax.random.key(3), jnp.zeros((1, 10), jnp.int32))["params"]
    key = jax.random.key(0)
    out = analysis.analyze_run(jax.tree.map(lambda a: a[None], params), key, spec, hp, 2)
    g = facts.constants(key, spec, hp)
    tokens = analysis.all_fact_prompts(key, g, spec, hp, 2)
    _, acts = model.apply({"params": params}, tokens, return_activations=True)
    n, num_rel = g.object_NxR.shape
    cycle = np.asarray(g.cycle_R)
    act = np.asarray(acts["block0"])
    for e in (0, 5, 11):
        rows = [q * n * num_rel + e * num_rel + r for q in range(2) for r in range(num_rel)]
        assert all(int(tokens[i, -2]) == e for i in rows)
        assert np.allclose(out["representations"][0, 1, e], act[rows, -2].mean(0), atol=1e-5)
        for c in range(2):
            on_c = [i for i in rows if cycle[int(tokens[i, -1]) - n] == c]
            assert len(on_c) == 2 * 2 * 2    # contexts x 2h relations
            assert np.allclose(out["query_representations"][0, 0, c, e],
                               act[on_c, -1].mean(0), atol=1e-5)
