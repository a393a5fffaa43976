"""Graph tracing (in-context learning of representations): the generator against its definition,
the neighbour-mass metric, the analysis on hand-made embeddings, and the CLI end to end."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsim import cli, training
import jaxsim.testbeds as testbeds
from jaxsim import config as cfglib
from jaxsim.testbeds.graph_walk import task as gw
from jaxsim.training import objectives

GW = {"task": {"name": "graph_walk", "graph": "grid", "graph_size": 4, "vocab": 32,
               "context_length": 24},
      "model": {"name": "gpt", "num_layers": 2, "d_model": 16, "num_heads": 2, "d_mlp": 32},
      "train": {"steps": 20, "batch_size": 8, "eval_every": 10, "eval_batch_size": 16},
      "sweep": {"seeds": 1, "checkpoint_every": 10, "plot": False}}


def _setup(**task):
    raw = {k: dict(v) for k, v in GW.items()}
    raw["task"].update(task)
    cfg = cfglib.from_dict(raw)
    return cfg, cfglib.spec_of(cfg), training.as_arrays(cfglib.hparams_of(cfg))


def _sample(batch_size, key=0, split="id", run_key=0, **task):
    _, spec, hp = _setup(**task)
    consts = gw.constants(jax.random.key(run_key), spec, hp)
    sample = jax.jit(gw.sample, static_argnums=(2, 4, 5))
    return sample(jax.random.key(key), consts, spec, hp, batch_size, split), consts


@pytest.mark.parametrize("graph,size,nodes,edges,max_deg", [
    ("grid", 4, 16, 24, 4), ("ring", 7, 7, 7, 2), ("ring", 15, 15, 15, 2), ("hex", 4, 16, 18, 3),
    ("triangular", 4, 16, 33, 6), ("triangular", 5, 25, 56, 6)])
def test_graphs_by_definition(graph, size, nodes, edges, max_deg):
    a = gw.adjacency(graph, size)
    assert a.shape == (nodes, nodes) and np.array_equal(a, a.T) and not a.diagonal().any()
    assert a.sum() // 2 == edges and a.sum(1).max() == max_deg
    reach = np.linalg.matrix_power(a + np.eye(nodes, dtype=int), nodes) > 0
    assert reach.all()                                   # connected
    xy = gw.layout(graph, size)
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    if graph != "ring":                                  # edges join layout neighbours
        assert np.allclose(dist[a == 1], 1.0)
    if graph == "hex":                                   # honeycomb: every cycle has even length
        colour = (np.arange(nodes) // size + np.arange(nodes) % size) % 2
        assert not a[colour[:, None] == colour[None]].any()


def _triangular_by_definition(size):
    """The triangular lattice from its definition: (i, j) ~ (i', j') iff (i' - i, j' - j) is one
    of the six moves (0, +-1), (+-1, 0), +-(1, 1), inside the size x size board."""
    moves = {(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1)}
    cells = [(i, j) for i in range(size) for j in range(size)]
    return np.array([[int((c[0] - r[0], c[1] - r[1]) in moves) for c in cells] for r in cells])


@pytest.mark.parametrize("size", [2, 3, 4, 6])
def test_triangular_lattice_by_definition(size):
    a = gw.adjacency("triangular", size)
    assert np.array_equal(a, _triangular_by_definition(size))
    # edges: size (size - 1) horizontal + as many vertical + (size - 1)^2 diagonal
    assert a.sum() // 2 == 2 * size * (size - 1) + (size - 1) ** 2
    deg = a.sum(1).reshape(size, size)
    # corners: 3 at (0, 0) and (s-1, s-1) (they own a diagonal), 2 at the other two
    assert deg[0, 0] == deg[-1, -1] == 3 and deg[0, -1] == deg[-1, 0] == 2
    if size >= 3:
        assert (deg[1:-1, 1:-1] == 6).all() and (deg[0, 1:-1] == 4).all()
        assert (deg[1:-1, 0] == 4).all()
    # two triangles per cell: trace(A^3) = 6 x triangles
    assert np.trace(np.linalg.matrix_power(a, 3)) == 6 * 2 * (size - 1) ** 2


@pytest.mark.parametrize("graph,size,bipartite", [
    ("grid", 4, True), ("hex", 4, True), ("ring", 8, True), ("ring", 7, False),
    ("ring", 15, False), ("triangular", 4, False), ("triangular", 3, False)])
def test_bipartite_or_not(graph, size, bipartite):
    """A connected graph is bipartite iff it has no odd cycle iff its adjacency spectrum is
    symmetric (smallest eigenvalue = -largest); numpy, independent of the generator's code."""
    a = gw.adjacency(graph, size)
    n = len(a)
    vals = np.linalg.eigvalsh(a.astype(np.float64))
    assert np.isclose(vals[0], -vals[-1]) == bipartite
    # an odd closed walk exists iff some odd power of A has a non-zero diagonal (length <= n)
    odd = any(np.trace(np.linalg.matrix_power(a.astype(np.int64), k)) > 0
              for k in range(3, n + 1, 2))
    assert odd == (not bipartite)
    if graph == "ring" and not bipartite:        # the shortest odd cycle is the whole ring
        assert all(np.trace(np.linalg.matrix_power(a.astype(np.int64), k)) == 0
                   for k in range(3, n, 2))
        assert np.trace(np.linalg.matrix_power(a.astype(np.int64), n)) == 2 * n
    if graph == "triangular":                    # regular-graph bound does not apply: degree
        assert vals[0] > -a.sum(1).max()         # varies; the spectrum is not symmetric


@pytest.mark.parametrize("graph,size", [("grid", 4), ("ring", 7), ("ring", 15), ("hex", 4),
                                        ("triangular", 4)])
def test_walks_only_take_edges_and_are_uniform_over_neighbours(graph, size):
    b, consts = _sample(512, graph=graph, graph_size=size, context_length=64)
    a = gw.adjacency(graph, size)
    nodes = np.asarray(b.nodes_BxL)
    assert a[nodes[:, :-1], nodes[:, 1:]].all()
    # each step's move is uniform over the current node's neighbours: chi-square per node
    counts = np.zeros_like(a, dtype=float)
    np.add.at(counts, (nodes[:, :-1].ravel(), nodes[:, 1:].ravel()), 1)
    for v in range(len(a)):
        nbrs = np.flatnonzero(a[v])
        c = counts[v, nbrs]
        expected = c.sum() / len(nbrs)
        assert ((c - expected) ** 2 / expected).sum() < 25, (v, c)
    # the start is uniform over nodes
    start = np.bincount(nodes[:, 0], minlength=len(a))
    assert ((start - 512 / len(a)) ** 2 / (512 / len(a))).sum() < 3 * len(a)


def test_assignment_is_injective_and_fresh_per_sequence():
    b, _ = _sample(256)
    maps = np.asarray(b.token_of_node_BxN)
    assert all(len(set(m)) == 16 for m in maps) and maps.min() >= 0 and maps.max() < 32
    assert len({tuple(m) for m in maps}) == 256
    # every token is used about equally often over sequences (16 of 32 each time)
    use = np.bincount(maps.ravel(), minlength=32) / 256
    assert np.all(np.abs(use - 0.5) < 0.15)
    tokens, nodes = np.asarray(b.tokens_BxL), np.asarray(b.nodes_BxL)
    np.testing.assert_array_equal(tokens, np.take_along_axis(maps, nodes, axis=1))


def test_next_probs_are_uniform_over_neighbour_tokens():
    b, _ = _sample(8)
    a = gw.adjacency("grid", 4)
    probs = np.asarray(b.next_probs_BxLxK)
    maps, nodes = np.asarray(b.token_of_node_BxN), np.asarray(b.nodes_BxL)
    for s in range(8):
        for t in (0, 5, 23):
            nbrs = maps[s, np.flatnonzero(a[nodes[s, t]])]
            expected = np.zeros(32)
            expected[nbrs] = 1 / len(nbrs)
            np.testing.assert_allclose(probs[s, t], expected, atol=1e-6)
    # the next token always has positive probability (the oracle loss is finite)
    nxt = np.take_along_axis(probs[:, :-1], np.asarray(b.tokens_BxL)[:, 1:, None], -1)
    assert nxt.min() > 0


def test_fixed_assignment_and_conflict_split():
    fixed, consts = _sample(64, pretrain_frac=1.0)
    fixed_map = np.asarray(consts.fixed_map_N)
    assert np.all(np.asarray(fixed.token_of_node_BxN) == fixed_map[None])
    # under the fixed map the prior distribution is the true one
    np.testing.assert_allclose(np.asarray(fixed.prior_probs_BxLxK),
                               np.asarray(fixed.next_probs_BxLxK), atol=1e-6)
    half, _ = _sample(2000, pretrain_frac=0.5)
    share = np.mean(np.all(np.asarray(half.token_of_node_BxN) == fixed_map[None], axis=1))
    assert abs(share - 0.5) < 0.05
    conflict, _ = _sample(64, split="conflict")
    maps = np.asarray(conflict.token_of_node_BxN)
    assert all(sorted(m) == sorted(fixed_map) for m in maps)       # same tokens, rearranged
    assert np.mean(np.all(maps == fixed_map[None], axis=1)) < 0.05
    # another run has another fixed map; the same run the same one
    _, other = _sample(4, run_key=1)
    _, same = _sample(4, run_key=0, key=9)
    assert not np.array_equal(np.asarray(other.fixed_map_N), fixed_map)
    np.testing.assert_array_equal(np.asarray(same.fixed_map_N), fixed_map)


def test_neighbour_mass_metric_on_known_logits():
    b, _ = _sample(4)
    probs = b.next_probs_BxLxK
    oracle_logits = jnp.log(jnp.maximum(probs, 1e-9))
    mass = objectives.probability_mass(oracle_logits, probs)
    np.testing.assert_allclose(np.asarray(mass), 1.0, atol=1e-5)
    uniform = objectives.probability_mass(jnp.zeros_like(probs), probs)
    deg = (np.asarray(probs) > 0).sum(-1)
    np.testing.assert_allclose(np.asarray(uniform), deg / 32, atol=1e-6)
    m = testbeds.get("graph_walk").objective.evaluate(oracle_logits[:, :-1], b)
    assert float(m["eval_loss"]) == pytest.approx(float(m["oracle_loss"]), abs=1e-4)


def test_bad_graph_configs():
    with pytest.raises(cfglib.ConfigError, match="task.vocab"):
        _setup(vocab=10)
    with pytest.raises(cfglib.ConfigError, match="task.graph "):
        _setup(graph="torus")
    with pytest.raises(cfglib.ConfigError, match="task.graph_size"):
        _setup(graph="ring", graph_size=2)
    with pytest.raises(cfglib.ConfigError, match="model.name"):
        cfglib.from_dict({"task": {"name": "graph_walk"}, "model": {"name": "encoder"}})
    with pytest.raises(cfglib.ConfigError, match="task.pretrain_frac"):
        _setup(pretrain_frac=1.5)


# ---- analysis on hand-made cases ----

from jaxsim.testbeds.graph_walk import representations as graph# noqa: E402


def test_dirichlet_energy_of_known_embeddings():
    a = gw.adjacency("ring", 4)                        # square 0-1-2-3-0
    x = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    # sum over ordered pairs: 2 * 4 edges of length 1 = 8; total variance = 4 * 0.5 = 2
    e = graph.dirichlet_energy(jnp.asarray(x), jnp.ones(4, bool), jnp.asarray(a))
    assert float(e) == pytest.approx(4.0)
    # invariant to scale, shift and width (zero-padded dimensions)
    x2 = np.concatenate([3 * x + 5, np.zeros((4, 3))], 1).astype(np.float32)
    assert float(graph.dirichlet_energy(jnp.asarray(x2), jnp.ones(4, bool), jnp.asarray(a))) \
        == pytest.approx(4.0, rel=1e-5)
    # an absent node drops out: path 0-1-2, edges of length 1, variance 2/3 + ... by hand
    present = jnp.asarray([True, True, True, False])
    mean = x[:3].mean(0)
    expected = 2 * 2 / ((x[:3] - mean) ** 2).sum()
    assert float(graph.dirichlet_energy(jnp.asarray(x), present, jnp.asarray(a))) \
        == pytest.approx(expected, rel=1e-5)
    assert np.isnan(float(graph.dirichlet_energy(jnp.asarray(x), jnp.asarray(
        [True, True, False, False]), jnp.asarray(a))))


def test_energy_references_minimum_and_random():
    a = gw.adjacency("grid", 4)
    refs = graph.laplacian_references(a)
    assert refs["energy_min"] == pytest.approx(2 * (2 - 2 * np.cos(np.pi / 4)))
    spectral = refs["spectral"].astype(np.float32)
    e_min = float(graph.dirichlet_energy(jnp.asarray(spectral), jnp.ones(16, bool),
                                         jnp.asarray(a)))
    assert e_min == pytest.approx(refs["energy_min"], rel=1e-4)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2000, 16, 8)), jnp.float32)
    e_rand = np.asarray(graph.dirichlet_energy(x, jnp.ones((2000, 16), bool), jnp.asarray(a)))
    assert e_rand.mean() == pytest.approx(refs["energy_random"], rel=0.03)
    assert e_rand.min() > e_min


def test_previous_token_mix_reference():
    adj = gw.adjacency("triangular", 4)
    table, deg = gw.neighbour_table(adj)
    nodes = gw.walks(jax.random.key(0), jnp.asarray(table), jnp.asarray(deg), 32, 96)
    mixed = np.asarray(graph.previous_token_mix(jax.random.key(1), nodes, 16, dim=8))
    g = np.asarray(jax.random.normal(jax.random.key(1), (32, 16, 8)))
    nd, rows = np.asarray(nodes), np.arange(32)[:, None]
    assert np.allclose(mixed[:, 0], g[np.arange(32), nd[:, 0]])
    assert np.allclose(mixed[:, 1:], g[rows, nd[:, 1:]] + g[rows, nd[:, :-1]], atol=1e-6)
    # smoother than i.i.d. means on the same windows, bipartite or not, with no graph inference
    for name in ("triangular", "grid"):
        a = gw.adjacency(name, 4)
        t, d = gw.neighbour_table(a)
        walk = gw.walks(jax.random.key(2), jnp.asarray(t), jnp.asarray(d), 32, 96)
        means, counts = graph.class_means(graph.previous_token_mix(jax.random.key(3), walk, 16),
                                          walk, jnp.array([95]), 50, 16)
        noise = jax.random.normal(jax.random.key(4), counts.shape + (16,))
        e_mix = np.nanmean(graph.dirichlet_energy(means, counts > 0, jnp.asarray(a)))
        e_rnd = np.nanmean(graph.dirichlet_energy(noise, counts > 0, jnp.asarray(a)))
        assert e_mix < 0.85 * e_rnd, (name, e_mix, e_rnd)


def test_class_means_over_the_window():
    nodes = jnp.asarray([[0, 1, 0, 2, 1, 0]])
    acts = jnp.asarray(np.arange(6, dtype=np.float32)[None, :, None])
    means, counts = graph.class_means(acts, nodes, jnp.asarray([5, 2]), 3, 3)
    # window (2, 5] = positions 3, 4, 5: nodes 2, 1, 0 with activations 3, 4, 5
    np.testing.assert_allclose(np.asarray(means[0, 0, :, 0]), [5, 4, 3])
    np.testing.assert_allclose(np.asarray(counts[0, 0]), [1, 1, 1])
    # window (-1, 2] = positions 0, 1, 2: node 0 twice (0, 2), node 1 once, node 2 absent
    np.testing.assert_allclose(np.asarray(means[0, 1, :, 0]), [1, 1, 0])
    np.testing.assert_allclose(np.asarray(counts[0, 1]), [2, 1, 0])


def test_pca_of_a_planted_grid_recovers_it():
    xy = gw.layout("grid", 4)
    rng = np.random.default_rng(0)
    embed = xy @ rng.normal(size=(2, 32)) + 0.05 * rng.normal(size=(16, 32)) + 3.0
    coords, explained = graph.pca2(embed, np.ones(16, bool))
    assert graph.layout_r2(coords, xy) > 0.99 and explained.sum() > 0.99
    # a random embedding's top PCs explain little of the layout
    noise = rng.normal(size=(16, 32))
    coords, _ = graph.pca2(noise, np.ones(16, bool))
    assert graph.layout_r2(coords, xy) < 0.6
    # absent nodes are NaN and ignored
    present = np.ones(16, bool)
    present[[0, 5]] = False
    coords, _ = graph.pca2(embed, present)
    assert np.isnan(coords[[0, 5]]).all() and graph.layout_r2(coords, xy) > 0.99


def test_edge_coverage_by_hand():
    a = gw.adjacency("grid", 2)                       # square 0-1, 0-2, 1-3, 2-3
    nodes = np.array([[0, 1, 0, 2, 3]])
    # t=0: node 0, nothing taken -> 0; t=1: node 1, edge 0-1 of {0, 3} -> 1/2;
    # t=2: node 0, edge 0-1 of {1, 2} -> 1/2; t=3: node 2, edge 0-2 of {0, 3} -> 1/2
    np.testing.assert_allclose(graph.edge_coverage(nodes, a), [0, 0.5, 0.5, 0.5])


def test_cli_sweep_analyze_plot(tmp_path):
    import yaml
    raw = {k: dict(v) for k, v in GW.items()}
    raw["sweep"]["axes"] = {"task.pretrain_frac": [0.0, 0.5]}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 0
    assert cli.main(["analyze", str(out), "--context-lengths", "30"]) == 2   # > trained - 1
    assert cli.main(["analyze", str(out), "--sequences", "8",
                     "--context-lengths", "2,8,23"]) == 0
    assert cli.main(["plot", str(out)]) == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["task"] == "graph_walk" and len(doc["runs"]) == 2
    assert doc["sites"] == ["embed", "block0", "block1"] and doc["context_lengths"] == [2, 8, 23]
    assert doc["energy_min"] < doc["energy_random_expected"]
    for run in doc["runs"]:
        steps = len(run["steps"])
        assert np.array(run["accuracy"]).shape == (steps, 23)
        acc = np.array(run["accuracy"], float)
        assert np.all((acc >= 0) & (acc <= 1 + 1e-6))
        assert np.array(run["energy"]).shape == (steps, 3, 3)
        assert np.array(run["layout_r2"]).shape == (3, 3)
        assert len(run["energy_prev_mix"]) == len(run["layout_r2_prev_mix"]) == 3
        # copying the previous token alone smooths the class means (at the longest context)
        assert run["energy_prev_mix"][-1] < run["energy_random"][-1]
    with np.load(out / "analysis_graph.npz") as f:
        assert f["means"].shape == (2, 3, 3, 4, 16, 16) and f["pcs"].shape == (2, 3, 3, 4, 16, 2)
        # a node seen in the window has a finite PC; an absent one has none
        seen = f["counts"][0, 2] > 0
        assert np.isfinite(f["pcs"][0, 0, 2][seen]).all()
        assert np.isnan(f["pcs"][0, 0, 2][~seen]).all()
    for name in ("graph_curves.png", "graph_accuracy.png", "graph_energy.png", "graph_pca.png"):
        assert (out / "figures" / name).stat().st_size > 0


def test_compiled_analysis_has_no_lapack_call():
    """The vmapped analysis program is matmuls and sorts only (batched LAPACK deadlocks on a
    2-thread CPU); PCA runs in numpy afterwards."""
    _, spec, hp = _setup()
    state = training.init(jax.random.key(0), spec, hp)
    params_RxS = jax.tree.map(lambda a: jnp.stack([jnp.stack([a, a])] * 2), state["params"])
    hp_R = jax.tree.map(lambda a: jnp.stack([a, a]), hp)
    from jaxsim.analysis import driver
    from jaxsim.analysis.checkpoints import ChunkParams
    chunk = ChunkParams(spec, [], [], [0, 1], params_RxS, jnp.arange(2, dtype=jnp.int32), hp_R,
                        None)
    args = (graph.analyze_run, chunk, jnp.asarray([3, 10]), 5, 4)
    hlo = driver.lower_runs(*args).compile().as_text()
    assert "custom-call" not in hlo and "custom_call" not in hlo
    out = jax.device_get(driver.map_runs(*args))
    assert out["accuracy"].shape == (2, 2, 23) and out["energy"].shape == (2, 2, 3, 2)
    # identical checkpoints give identical analyses
    np.testing.assert_array_equal(out["accuracy"][:, 0], out["accuracy"][:, 1])
